//! Property test of the journal fold (issue 16, "then prove it"): any
//! prefix of any interleaving of the journal records of several workers,
//! with or without a torn last record per worker, folds to a state from
//! which resuming completes the bundle exactly as an uninterrupted run
//! does, even when the resumes are themselves cut short.
//!
//! Real journals (`JournalWriter`) in a real directory, folded by the
//! library (`fold_journals`) and read through the status API
//! (`CampaignProgress::state`, `QuantumProgress::attempts`). Quanta are
//! simulated: each has upstream quanta and a fixed outcome, so an
//! uninterrupted run's result is known. The resume follows the runtime's
//! rules (`runtime/src/executor.rs`): a quantum the fold calls succeeded is
//! skipped; any other runs as attempt `attempts + 1` once its upstream
//! quanta have succeeded, and is journaled as blocked (attempt 0) when one
//! of them did not.

use std::path::Path;

use proptest::prelude::*;
use quanta_core::{
    fold_journals, JournalHeader, JournalRecord, JournalWriter, QuantumState, QuantumStatus, Uuid,
};

/// A simulated bundle: quanta in topological order.
#[derive(Debug, Clone)]
struct Dag {
    /// Upstream quanta of each quantum, all before it.
    upstream: Vec<Vec<u32>>,
    /// Whether the quantum succeeds when it runs (else it fails).
    succeeds: Vec<bool>,
}

fn dag() -> impl Strategy<Value = Dag> {
    (2usize..10).prop_flat_map(|n| {
        let upstream = (0..n)
            .map(|i| prop::sample::subsequence((0..i as u32).collect::<Vec<_>>(), 0..=i.min(3)))
            .collect::<Vec<_>>();
        let succeeds = prop::collection::vec(prop::bool::weighted(0.8), n);
        (upstream, succeeds).prop_map(|(upstream, succeeds)| Dag { upstream, succeeds })
    })
}

const BUNDLE: Uuid = Uuid::from_u128(0xb0);

fn quantum_id(q: u32) -> Uuid {
    Uuid::from_u128(0x1000 + u128::from(q))
}

fn started(q: u32, attempt: u32) -> JournalRecord {
    JournalRecord::Started {
        quantum: q,
        quantum_id: quantum_id(q),
        attempt,
        host: "node".into(),
        pid: 1,
        time: "2026-12-04T00:00:00Z".into(),
        batch_job: None,
    }
}

fn finished(q: u32, attempt: u32, status: QuantumStatus) -> JournalRecord {
    JournalRecord::Finished {
        quantum: q,
        quantum_id: quantum_id(q),
        attempt,
        status,
        outputs: Vec::new(),
        inputs_used: Vec::new(),
        started: "2026-12-04T00:00:00Z".into(),
        finished: "2026-12-04T00:00:01Z".into(),
        wall_seconds: 1.0,
        cpu_seconds: 1.0,
        peak_rss_bytes: 0,
        exit_code: None,
        error: None,
        log_tail: Vec::new(),
    }
}

/// How a quantum ends, as the fold reports it.
fn end_state(status: QuantumStatus) -> QuantumState {
    match status {
        QuantumStatus::Succeeded => QuantumState::Succeeded,
        QuantumStatus::Failed => QuantumState::Failed,
        QuantumStatus::Blocked => QuantumState::Blocked,
        QuantumStatus::TimedOut => QuantumState::TimedOut,
        QuantumStatus::OutOfMemory => QuantumState::OutOfMemory,
    }
}

/// What an uninterrupted run ends with.
fn uninterrupted(dag: &Dag) -> Vec<QuantumState> {
    let mut out: Vec<QuantumState> = Vec::new();
    for (q, ups) in dag.upstream.iter().enumerate() {
        let state = if ups
            .iter()
            .any(|&u| out[u as usize] != QuantumState::Succeeded)
        {
            QuantumState::Blocked
        } else if dag.succeeds[q] {
            QuantumState::Succeeded
        } else {
            QuantumState::Failed
        };
        out.push(state);
    }
    out
}

/// One round of workers: each runs its quanta in index order, waiting for
/// their upstream quanta. `choices` picks which worker acts next; returns
/// every worker's records and the order in which they were written (worker
/// numbers), which is a causally possible interleaving.
///
/// `prior[q]` is what the fold said before the round: `None` to run the
/// quantum, `Some(attempts)` for the attempts started so far, and quanta
/// marked done are skipped.
fn run_round(
    dag: &Dag,
    workers: usize,
    owner: &[usize],
    done_before: &[bool],
    prior_attempts: &[u32],
    choices: &[u8],
) -> (Vec<Vec<JournalRecord>>, Vec<usize>) {
    let n = dag.upstream.len();
    // Final status per quantum within this round (None: not finished yet).
    let mut status: Vec<Option<QuantumStatus>> = (0..n)
        .map(|q| done_before[q].then_some(QuantumStatus::Succeeded))
        .collect();
    let queues: Vec<Vec<u32>> = (0..workers)
        .map(|w| {
            (0..n as u32)
                .filter(|&q| owner[q as usize] == w && !done_before[q as usize])
                .collect()
        })
        .collect();
    let mut next = vec![0usize; workers];
    // Whether the worker has written Started for its current quantum.
    let mut running = vec![false; workers];
    let mut records: Vec<Vec<JournalRecord>> = vec![Vec::new(); workers];
    let mut order = Vec::new();
    let mut step = 0usize;
    loop {
        let ready: Vec<usize> = (0..workers)
            .filter(|&w| {
                queues[w].get(next[w]).is_some_and(|&q| {
                    running[w]
                        || dag.upstream[q as usize]
                            .iter()
                            .all(|&u| status[u as usize].is_some())
                })
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        let pick = choices.get(step).copied().unwrap_or(0) as usize;
        step += 1;
        let w = ready[pick % ready.len()];
        let q = queues[w][next[w]];
        let qi = q as usize;
        let attempt = prior_attempts[qi] + 1;
        let upstream_ok = dag.upstream[qi]
            .iter()
            .all(|&u| status[u as usize] == Some(QuantumStatus::Succeeded));
        if !running[w] && !upstream_ok {
            records[w].push(finished(q, 0, QuantumStatus::Blocked));
            status[qi] = Some(QuantumStatus::Blocked);
            next[w] += 1;
        } else if !running[w] {
            records[w].push(started(q, attempt));
            running[w] = true;
        } else {
            let s = if dag.succeeds[qi] {
                QuantumStatus::Succeeded
            } else {
                QuantumStatus::Failed
            };
            records[w].push(finished(q, attempt, s));
            status[qi] = Some(s);
            running[w] = false;
            next[w] += 1;
        }
        order.push(w);
    }
    // The lowest unfinished quantum can always proceed, so every queue ends.
    assert!((0..workers).all(|w| next[w] == queues[w].len()));
    (records, order)
}

/// Writes the first `cut` records of the interleaving `order` into one
/// journal per worker (`round`-`w`.journal); with `torn[w]`, the worker's
/// next record is left torn after that many bytes of its frame.
fn write_prefix(
    dir: &Path,
    round: usize,
    records: &[Vec<JournalRecord>],
    order: &[usize],
    cut: usize,
    torn: &[u16],
) {
    let mut counts = vec![0usize; records.len()];
    for &w in &order[..cut.min(order.len())] {
        counts[w] += 1;
    }
    for (w, recs) in records.iter().enumerate() {
        if recs.is_empty() {
            continue;
        }
        let path = dir.join(format!("r{round}-w{w}.journal"));
        let header = JournalHeader {
            bundle_id: BUNDLE,
            worker: format!("r{round}-w{w}"),
            host: "node".into(),
            pid: 1,
            started_at: "2026-12-04T00:00:00Z".into(),
        };
        let mut writer = JournalWriter::create_unsynced(&path, &header).unwrap();
        for rec in &recs[..counts[w]] {
            writer.append(rec).unwrap();
        }
        drop(writer);
        if let (Some(next), Some(&tear)) = (recs.get(counts[w]), torn.get(w)) {
            if tear > 0 {
                let whole = std::fs::metadata(&path).unwrap().len();
                let mut writer = JournalWriter::open_append(&path).unwrap();
                writer.append(next).unwrap();
                drop(writer);
                let with_next = std::fs::metadata(&path).unwrap().len();
                // Strictly less than the whole frame: a torn record.
                let keep = u64::from(tear) % (with_next - whole);
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(whole + keep).unwrap();
            }
        }
    }
}

/// One interrupted round: how the workers interleave, where the crash cuts
/// the interleaving, and which workers leave a torn record.
#[derive(Debug, Clone)]
struct Crash {
    workers: usize,
    owner_seed: Vec<u8>,
    choices: Vec<u8>,
    /// Fraction of the round's records written, in 1/256ths.
    cut: u8,
    torn: Vec<u16>,
}

fn crash() -> impl Strategy<Value = Crash> {
    (
        1usize..4,
        prop::collection::vec(any::<u8>(), 10),
        prop::collection::vec(any::<u8>(), 64),
        any::<u8>(),
        prop::collection::vec(prop_oneof![2 => Just(0u16), 1 => any::<u16>()], 3),
    )
        .prop_map(|(workers, owner_seed, choices, cut, torn)| Crash {
            workers,
            owner_seed,
            choices,
            cut,
            torn,
        })
}

fn fold_states(dir: &Path, n: usize) -> (Vec<QuantumState>, Vec<u32>) {
    let p = fold_journals(dir, BUNDLE, n).unwrap();
    assert!(p.unknown_quanta.is_empty() && p.foreign_journals.is_empty());
    let states = (0..n as u32).map(|q| p.state(q)).collect();
    let attempts = (0..n as u32)
        .map(|q| p.quanta.get(&q).map_or(0, |x| x.attempts))
        .collect();
    (states, attempts)
}

/// What the fold must say of quantum `q` after the records `written`
/// (every record of it in the journals, in any order across rounds).
fn expected_prefix_state(written: &[&JournalRecord]) -> QuantumState {
    if written.iter().any(|r| {
        matches!(
            r,
            JournalRecord::Finished {
                status: QuantumStatus::Succeeded,
                ..
            }
        )
    }) {
        return QuantumState::Succeeded;
    }
    let last_finish = written
        .iter()
        .filter_map(|r| match r {
            JournalRecord::Finished {
                attempt, status, ..
            } => Some((*attempt, *status)),
            _ => None,
        })
        .max_by_key(|(a, _)| *a);
    let last_start = written
        .iter()
        .filter_map(|r| match r {
            JournalRecord::Started { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .max();
    match (last_start, last_finish) {
        (Some(s), Some((f, _))) if s > f => QuantumState::Running,
        (_, Some((_, status))) => end_state(status),
        (Some(_), None) => QuantumState::Running,
        (None, None) => QuantumState::Pending,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_prefix_folds_to_a_state_that_resume_completes(
        dag in dag(),
        crashes in prop::collection::vec(crash(), 1..4),
        final_choices in prop::collection::vec(any::<u8>(), 64),
    ) {
        let n = dag.upstream.len();
        let want = uninterrupted(&dag);
        let dir = tempfile::tempdir().unwrap();
        let mut all_written: Vec<JournalRecord> = Vec::new();
        // Interrupted rounds (the first is the original run, the rest are
        // resumes that crashed too), then one resume left to finish.
        for round in 0..=crashes.len() {
            let (states, attempts) = fold_states(dir.path(), n);
            let done: Vec<bool> = states.iter().map(|s| *s == QuantumState::Succeeded).collect();
            let (workers, owner, choices, cut, torn) = match crashes.get(round) {
                Some(c) => {
                    let owner: Vec<usize> = (0..n)
                        .map(|q| c.owner_seed[q % c.owner_seed.len()] as usize % c.workers)
                        .collect();
                    (c.workers, owner, c.choices.clone(), Some(c.cut), c.torn.clone())
                }
                None => (1, vec![0; n], final_choices.clone(), None, Vec::new()),
            };
            let (records, order) = run_round(&dag, workers, &owner, &done, &attempts, &choices);
            let cut = match cut {
                Some(c) => order.len() * usize::from(c) / 256,
                None => order.len(),
            };
            write_prefix(dir.path(), round, &records, &order, cut, &torn);
            let mut counts = vec![0usize; workers];
            for &w in &order[..cut] {
                all_written.push(records[w][counts[w]].clone());
                counts[w] += 1;
            }
            // Every intermediate fold says exactly what its records say.
            let (states, _) = fold_states(dir.path(), n);
            for q in 0..n as u32 {
                let of_q: Vec<&JournalRecord> =
                    all_written.iter().filter(|r| r.quantum() == q).collect();
                prop_assert_eq!(
                    states[q as usize],
                    expected_prefix_state(&of_q),
                    "quantum {} after round {}", q, round
                );
            }
        }
        let (end, _) = fold_states(dir.path(), n);
        prop_assert_eq!(end, want);
    }
}
