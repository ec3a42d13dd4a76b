//! The `dataset` entries of `export.yaml` — one per exported file, all but
//! a few hundred lines of a large export — written and read without a
//! general YAML library, in one fixed block layout:
//!
//! ```yaml
//! - type: dataset
//!   dataset_type: raw
//!   run: Cam/raw
//!   records:
//!   - dataset_id:
//!     - !uuid 0193f3a2-8d5e-7c41-9a0b-1c2d3e4f5a6b
//!     data_id:
//!     - instrument: Cam
//!       exposure: 7
//!     path: Cam/raw/raw/7/raw_Cam_7_0193f3a2-….json
//!     formatter: lsst.daf.butler.formatters.json.JsonFormatter
//! ```
//!
//! Strings are plain when they cannot be read as anything else (letters,
//! digits, `_./-`, starting with a letter, `_` or `/`, not a YAML 1.1 bool
//! or null word), otherwise double-quoted with JSON's escapes (valid YAML
//! escapes with the same meaning). `serde_yaml_ng` writing one
//! `serde_yaml_ng::Value` of a million-dataset document took 2.6 s per
//! 200,000 datasets, and reading it back 3.4 s.
//!
//! The reader takes only this layout, line by line; on anything else
//! ([`read_dataset_entry`] returns `None`) the caller parses the entry with
//! the general YAML parser, so an entry is read the same either way.

use std::io::{self, Write};

use quanta_core::{DataId, DataIdValue, Uuid};

use super::format::{DatasetEntry, FileEntry};

/// YAML 1.1 words that a plain scalar would turn into a bool or null.
const SPECIAL_WORDS: &[&str] = &["y", "n", "yes", "no", "true", "false", "on", "off", "null"];

/// Whether `s` reads back as the same string when written plain.
fn plain_ok(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !SPECIAL_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// Writes a string scalar: plain when safe, else double-quoted.
pub(crate) fn write_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    if plain_ok(s) {
        out.write_all(s.as_bytes())
    } else {
        serde_json::to_writer(&mut *out, s).map_err(io::Error::other)
    }
}

/// Writes a data ID value: integers as integers, strings as strings.
fn write_value(out: &mut impl Write, v: &DataIdValue) -> io::Result<()> {
    match v {
        DataIdValue::Str(s) => write_str(out, s),
        DataIdValue::Int(i) => write!(out, "{i}"),
    }
}

/// Writes one `dataset` entry in the fixed layout.
pub(crate) fn write_dataset_entry(out: &mut impl Write, d: &DatasetEntry) -> io::Result<()> {
    out.write_all(b"- type: dataset\n  dataset_type: ")?;
    write_str(out, &d.dataset_type)?;
    out.write_all(b"\n  run: ")?;
    write_str(out, &d.run)?;
    if d.files.is_empty() {
        return out.write_all(b"\n  records: []\n");
    }
    out.write_all(b"\n  records:\n")?;
    let mut uuid_buf = Uuid::encode_buffer();
    for f in &d.files {
        out.write_all(b"  - dataset_id:\n")?;
        for id in &f.dataset_ids {
            out.write_all(b"    - !uuid ")?;
            out.write_all(id.hyphenated().encode_lower(&mut uuid_buf).as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.write_all(b"    data_id:\n")?;
        for data_id in &f.data_ids {
            if data_id.is_empty() {
                out.write_all(b"    - {}\n")?;
                continue;
            }
            for (i, (k, v)) in data_id.iter().enumerate() {
                out.write_all(if i == 0 { b"    - " } else { b"      " })?;
                write_str(out, k)?;
                out.write_all(b": ")?;
                write_value(out, v)?;
                out.write_all(b"\n")?;
            }
        }
        out.write_all(b"    path: ")?;
        write_str(out, &f.path)?;
        out.write_all(b"\n")?;
        if let Some(formatter) = &f.formatter {
            out.write_all(b"    formatter: ")?;
            write_str(out, formatter)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// A string scalar as written by [`write_str`] (or single-quoted on one
/// line); `None` for anything the fixed layout does not produce.
fn read_str(text: &str) -> Option<String> {
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str(text).ok(),
        b'\'' => {
            let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
            if inner.replace("''", "").contains('\'') {
                return None;
            }
            Some(inner.replace("''", "'"))
        }
        _ => plain_ok(text).then(|| text.to_string()),
    }
}

/// A data ID value: a decimal integer (no leading zeros, which YAML 1.1
/// reads as octal) or a string.
fn read_value(text: &str) -> Option<DataIdValue> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        return text.parse::<i64>().ok().map(DataIdValue::Int);
    }
    read_str(text).map(|s| DataIdValue::Str(s.into()))
}

/// `key: value` after `prefix`, with `key` a plain name.
fn key_value<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(prefix)?;
    let (key, value) = rest.split_once(": ")?;
    let valid = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && key.bytes().next().is_some_and(|b| !b.is_ascii_digit());
    valid.then_some((key, value))
}

/// One `dataset` entry from its lines (the first is `- type: dataset`),
/// when they are in the fixed layout; `None` otherwise.
pub(crate) fn read_dataset_entry(lines: &[&str], line: usize) -> Option<DatasetEntry> {
    let mut it = lines.iter().copied().peekable();
    if it.next()? != "- type: dataset" {
        return None;
    }
    let dataset_type = read_str(it.next()?.strip_prefix("  dataset_type: ")?)?;
    let run = read_str(it.next()?.strip_prefix("  run: ")?)?;
    let mut entry = DatasetEntry {
        dataset_type,
        run,
        files: Vec::new(),
        line: Some(line),
    };
    match it.next()? {
        "  records: []" => return it.next().is_none().then_some(entry),
        "  records:" => {}
        _ => return None,
    }
    while let Some(first) = it.next() {
        if first != "  - dataset_id:" {
            return None;
        }
        let mut dataset_ids = Vec::with_capacity(1);
        while let Some(l) = it.next_if(|l| l.starts_with("    - !uuid ")) {
            let text = &l["    - !uuid ".len()..];
            let text = match text.as_bytes().first()? {
                b'\'' | b'"' => read_str(text)?,
                // A plain UUID (hex digits and dashes: nothing YAML reads
                // otherwise).
                _ if text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') => text.to_string(),
                _ => return None,
            };
            dataset_ids.push(Uuid::parse_str(&text).ok()?);
        }
        if it.next()? != "    data_id:" {
            return None;
        }
        let mut data_ids = Vec::with_capacity(1);
        while let Some(l) = it.next_if(|l| l.starts_with("    - ")) {
            let mut data_id = DataId::empty();
            if l != "    - {}" {
                let (k, v) = key_value(l, "    - ")?;
                data_id.insert(k, read_value(v)?);
                while let Some(l) = it.next_if(|l| l.starts_with("      ")) {
                    let (k, v) = key_value(l, "      ")?;
                    if data_id.get(k).is_some() {
                        return None;
                    }
                    data_id.insert(k, read_value(v)?);
                }
            }
            data_ids.push(data_id);
        }
        let path = read_str(it.next()?.strip_prefix("    path: ")?)?;
        let formatter = match it.next_if(|l| l.starts_with("    formatter: ")) {
            Some(l) => Some(read_str(&l["    formatter: ".len()..])?),
            None => None,
        };
        if dataset_ids.len() != data_ids.len() || dataset_ids.is_empty() {
            return None;
        }
        entry.files.push(FileEntry {
            dataset_ids,
            data_ids,
            path,
            formatter,
        });
    }
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> DatasetEntry {
        let mut data_id = DataId::empty();
        data_id.insert("instrument", "Cam");
        data_id.insert("exposure", -7);
        data_id.insert("band", "yes");
        data_id.insert("name", "a: b #c 'q' \"d\" é");
        DatasetEntry {
            dataset_type: "raw".into(),
            run: "u/someone/run 1".into(),
            files: vec![
                FileEntry {
                    dataset_ids: vec![Uuid::now_v7()],
                    data_ids: vec![data_id],
                    path: "raw/007/raw.json".into(),
                    formatter: Some("lsst.daf.butler.formatters.json.JsonFormatter".into()),
                },
                FileEntry {
                    dataset_ids: vec![Uuid::now_v7()],
                    data_ids: vec![DataId::empty()],
                    path: "0123.fits".into(),
                    formatter: None,
                },
            ],
            line: Some(3),
        }
    }

    #[test]
    fn the_fixed_layout_reads_back_and_is_the_yaml_it_claims() {
        let e = entry();
        let mut out = Vec::new();
        write_dataset_entry(&mut out, &e).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(read_dataset_entry(&lines, 3), Some(e.clone()));
        // The general parser reads the same values.
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let record = &yaml[0]["records"][0];
        assert_eq!(record["data_id"][0]["band"].as_str(), Some("yes"));
        assert_eq!(record["data_id"][0]["exposure"].as_i64(), Some(-7));
        assert_eq!(
            record["data_id"][0]["name"].as_str(),
            Some("a: b #c 'q' \"d\" é")
        );
        assert_eq!(yaml[0]["run"].as_str(), Some("u/someone/run 1"));
        assert_eq!(yaml[0]["records"][1]["path"].as_str(), Some("0123.fits"));
    }

    #[test]
    fn anything_outside_the_layout_is_left_to_the_general_parser() {
        let mut out = Vec::new();
        write_dataset_entry(&mut out, &entry()).unwrap();
        let text = String::from_utf8(out).unwrap();
        for (from, to) in [
            ("exposure: -7", "exposure: 007"),
            ("exposure: -7", "exposure: 1.5"),
            ("exposure: -7", "exposure: true"),
            ("path: raw/007/raw.json", "path: raw/007/raw.json # note"),
            ("  run:", "  run:  "),
            ("    data_id:", "    data_id: []"),
        ] {
            let changed = text.replace(from, to);
            let lines: Vec<&str> = changed.lines().collect();
            assert_eq!(read_dataset_entry(&lines, 1), None, "{to}");
        }
    }
}
