//! Journals: the streaming reader, the whole-file reader and the fold of
//! several journals into per-quantum state.
//!
//! The input is up to four journals separated by `\n----\n`. A part that
//! starts with `raw:` is written as is (the frame itself is fuzzed);
//! otherwise the part is a list of record payloads separated by `\n--\n`
//! (postcard bytes), each wrapped in a valid frame so the payload decoders
//! are reached. Checks beyond "no panic": the streaming and whole readers
//! agree, and the fold's counts cover exactly the bundle's quanta.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quanta_core::journal::{read_journal, JournalReader};
use quanta_core::{fold_journals, Uuid};

const N_QUANTA: usize = 16;

fn journal_bytes(part: &[u8]) -> Vec<u8> {
    if let Some(raw) = part.strip_prefix(b"raw:") {
        return raw.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = part;
    const SEP: &[u8] = b"\n--\n";
    loop {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(at) => {
                quanta_fuzz::journal_frame(&rest[..at], &mut out);
                rest = &rest[at + SEP.len()..];
            }
            None => {
                quanta_fuzz::journal_frame(rest, &mut out);
                return out;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = quanta_fuzz::scratch().join("journals");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bundle_id = None;
    for (i, part) in quanta_fuzz::split_parts(data)
        .into_iter()
        .take(4)
        .enumerate()
    {
        let path = dir.join(format!("w{i}.journal"));
        std::fs::write(&path, journal_bytes(part)).unwrap();
        let whole = read_journal(&path);
        let mut streamed = Vec::new();
        let reader = JournalReader::open(&path).map(|mut r| {
            while let Some(rec) = r.next_record().unwrap() {
                streamed.push(rec);
            }
            (r.torn_tail(), r.into_header())
        });
        match (&whole, reader) {
            (Ok(w), Ok((tail, header))) => {
                // Debug, not ==: a fuzzed f64 may be NaN.
                assert_eq!(
                    format!("{:?}", w.records),
                    format!("{streamed:?}"),
                    "readers disagree on records"
                );
                assert_eq!(w.torn_tail, tail, "readers disagree on the tail");
                assert_eq!(w.header, header);
                bundle_id.get_or_insert(header.bundle_id);
            }
            (Err(_), Err(_)) => {}
            (w, r) => panic!(
                "one reader refused the journal: {:?} / {:?}",
                w.is_ok(),
                r.is_ok()
            ),
        }
    }
    let bundle_id = bundle_id.unwrap_or(Uuid::nil());
    if let Ok(progress) = fold_journals(&dir, bundle_id, N_QUANTA) {
        let total: usize = progress.counts(N_QUANTA).values().sum();
        assert_eq!(total, N_QUANTA, "the fold's counts do not cover the bundle");
        for (index, q) in progress.quanta.iter() {
            assert!((index as usize) < N_QUANTA);
            // The files have not changed since the fold: every record it
            // kept reads back.
            if let Err(e) = q.finished().and(q.started()) {
                panic!("quantum {index}: a record the fold kept does not read back: {e}");
            }
        }
    }
});
