//! The last lines of a task's log, kept for the journal.

use std::collections::VecDeque;

/// Lines kept by default: enough to see why a task failed without letting a
/// chatty task bloat the journal.
pub const LOG_TAIL_LINES: usize = 50;
/// Longer lines are cut (at a character boundary) and marked.
const MAX_LINE_BYTES: usize = 2000;

/// A bounded buffer of the most recent log lines.
#[derive(Debug, Clone)]
pub struct LogTail {
    lines: VecDeque<String>,
    cap: usize,
    /// Bytes of a line not yet ended by `\n` (from [`LogTail::push_bytes`]).
    partial: Vec<u8>,
    dropped: u64,
}

impl Default for LogTail {
    fn default() -> Self {
        Self::new(LOG_TAIL_LINES)
    }
}

impl LogTail {
    pub fn new(cap: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(cap.min(64)),
            cap: cap.max(1),
            partial: Vec::new(),
            dropped: 0,
        }
    }

    /// Adds one line (a trailing newline is removed; inner ones split it).
    pub fn push_line(&mut self, line: &str) {
        for l in line.trim_end_matches(['\n', '\r']).split('\n') {
            self.push_one(l.trim_end_matches('\r').to_string());
        }
    }

    /// Adds raw output bytes; lines are completed across calls.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..nl]);
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            self.push_one(line.trim_end_matches('\r').to_string());
            rest = &rest[nl + 1..];
        }
        // An unbounded unterminated line must not grow without limit.
        let room = (MAX_LINE_BYTES + 4).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
    }

    /// Ends a pending unterminated line, if any.
    pub fn flush(&mut self) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            self.push_one(line);
        }
    }

    fn push_one(&mut self, mut line: String) {
        if line.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" […]");
        }
        if self.lines.len() == self.cap {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// The kept lines, oldest first, preceded by a note if earlier lines
    /// were dropped.
    pub fn into_lines(mut self) -> Vec<String> {
        self.flush();
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        if self.dropped > 0 {
            out.push(format!("[{} earlier lines not kept]", self.dropped));
        }
        out.extend(self.lines);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_says_how_many_were_dropped() {
        let mut t = LogTail::new(3);
        for i in 0..5 {
            t.push_line(&format!("line {i}\n"));
        }
        assert_eq!(
            t.into_lines(),
            vec!["[2 earlier lines not kept]", "line 2", "line 3", "line 4"]
        );
    }

    #[test]
    fn bytes_are_split_into_lines_across_calls() {
        let mut t = LogTail::new(10);
        t.push_bytes(b"ab");
        t.push_bytes(b"c\r\nde\nf");
        t.push_bytes("é".as_bytes());
        assert_eq!(t.into_lines(), vec!["abc", "de", "fé"]);
    }

    #[test]
    fn long_lines_are_cut_at_a_char_boundary() {
        let mut t = LogTail::new(2);
        t.push_line(&"é".repeat(MAX_LINE_BYTES));
        let lines = t.into_lines();
        assert!(lines[0].len() <= MAX_LINE_BYTES + 8);
        assert!(lines[0].ends_with(" […]"));
    }
}
