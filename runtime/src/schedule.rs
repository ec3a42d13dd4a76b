//! The state of one execution's selected quanta: which are pending, done,
//! failed or blocked, how many upstream quanta each still waits for, and
//! which are ready to hand to a worker. Knows nothing of threads or tasks;
//! [`crate::executor`] drives it.

use std::collections::{HashMap, VecDeque};

use quanta_core::{BundleQuantum, QuantumStatus};
use quanta_limited_registry::WorkerJournal;

use crate::error::RuntimeError;
use crate::executor::{Progress, Unfinished};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum State {
    Pending,
    Done,
    Failed,
    Blocked,
}

/// The selected quanta (position `k` in the selection; `indices[k]` in the
/// bundle) and their scheduling state.
pub(crate) struct Schedule {
    pub(crate) indices: Vec<u32>,
    pub(crate) quanta: Vec<BundleQuantum>,
    /// Task label per quantum, for messages.
    labels: Vec<String>,
    pos: HashMap<u32, usize>,
    pub(crate) state: Vec<State>,
    /// Attempts journaled by earlier executions.
    pub(crate) prior_attempts: Vec<u32>,
    /// Attempts made by this execution.
    pub(crate) attempts_here: Vec<u32>,
    /// Selected upstream quanta not yet done.
    remaining: Vec<usize>,
    downstream: Vec<Vec<usize>>,
    pub(crate) ready: VecDeque<usize>,
    pub(crate) progress: Progress,
    pub(crate) failures: Vec<Unfinished>,
}

/// What an earlier execution left, per selected quantum.
pub(crate) struct Prior {
    pub(crate) attempts: u32,
    /// Succeeded with every output present.
    pub(crate) done: bool,
}

impl Schedule {
    /// `prior(index, quantum)`: what earlier executions left of a selected
    /// quantum;
    /// `done_outside(u)`: whether upstream quantum `u`, not selected, has
    /// succeeded. Quanta waiting on an unfinished quantum outside the
    /// selection are returned with the reason, to be blocked.
    pub(crate) fn new(
        indices: Vec<u32>,
        quanta: Vec<BundleQuantum>,
        labels: Vec<String>,
        mut prior: impl FnMut(u32, &BundleQuantum) -> Option<Prior>,
        mut done_outside: impl FnMut(u32) -> Result<bool, RuntimeError>,
    ) -> Result<(Self, Vec<(usize, String)>), RuntimeError> {
        let n = indices.len();
        let mut s = Schedule {
            pos: indices.iter().enumerate().map(|(k, &i)| (i, k)).collect(),
            state: vec![State::Pending; n],
            prior_attempts: vec![0; n],
            attempts_here: vec![0; n],
            remaining: vec![0; n],
            downstream: vec![Vec::new(); n],
            ready: VecDeque::new(),
            progress: Progress {
                total: n,
                ..Default::default()
            },
            failures: Vec::new(),
            indices,
            quanta,
            labels,
        };
        for k in 0..n {
            if let Some(p) = prior(s.indices[k], &s.quanta[k]) {
                s.prior_attempts[k] = p.attempts;
                if p.done {
                    s.state[k] = State::Done;
                    s.progress.skipped += 1;
                }
            }
        }
        let mut outside_block: Vec<(usize, String)> = Vec::new();
        let mut checked_outside: HashMap<u32, bool> = HashMap::new();
        for k in 0..n {
            if s.state[k] != State::Pending {
                continue;
            }
            for &u in &s.quanta[k].upstream {
                match s.pos.get(&u) {
                    Some(&j) => {
                        if s.state[j] != State::Done {
                            s.remaining[k] += 1;
                            s.downstream[j].push(k);
                        }
                    }
                    None => {
                        let ok = match checked_outside.get(&u) {
                            Some(&ok) => ok,
                            None => {
                                let ok = done_outside(u)?;
                                checked_outside.insert(u, ok);
                                ok
                            }
                        };
                        if !ok && !outside_block.iter().any(|(b, _)| *b == k) {
                            outside_block.push((
                                k,
                                format!("upstream quantum {u} (outside this worker's set) has not succeeded"),
                            ));
                        }
                    }
                }
            }
        }
        s.ready = (0..n)
            .filter(|&k| s.state[k] == State::Pending && s.remaining[k] == 0)
            .collect();
        Ok((s, outside_block))
    }

    pub(crate) fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.indices.len()).filter(|&k| self.state[k] == State::Pending)
    }

    /// The next ready quantum still pending.
    pub(crate) fn next_ready(&mut self) -> Option<usize> {
        while let Some(k) = self.ready.pop_front() {
            if self.state[k] == State::Pending {
                return Some(k);
            }
        }
        None
    }

    pub(crate) fn position(&self, index: u32) -> usize {
        self.pos[&index]
    }

    fn describe(&self, k: usize) -> String {
        format!(
            "upstream quantum {} ({} {}) did not succeed",
            self.indices[k], self.labels[k], self.quanta[k].data_id
        )
    }

    /// `k` succeeded: its downstream quanta whose upstream are all done
    /// become ready.
    pub(crate) fn succeeded(&mut self, k: usize) {
        self.state[k] = State::Done;
        self.progress.succeeded += 1;
        for i in 0..self.downstream[k].len() {
            let d = self.downstream[k][i];
            self.remaining[d] -= 1;
            if self.remaining[d] == 0 && self.state[d] == State::Pending {
                self.ready.push_back(d);
            }
        }
    }

    /// `k` failed for good: recorded, and everything downstream blocked.
    pub(crate) fn failed(
        &mut self,
        k: usize,
        status: QuantumStatus,
        error: String,
        journal: &WorkerJournal,
    ) -> Result<(), RuntimeError> {
        self.state[k] = State::Failed;
        self.progress.failed += 1;
        self.failures.push(Unfinished {
            quantum: self.indices[k],
            task: self.labels[k].clone(),
            data_id: self.quanta[k].data_id.to_string(),
            status,
            attempts: self.attempts_here[k],
            error,
        });
        let reason = self.describe(k);
        for d in self.downstream[k].clone() {
            self.block(d, reason.clone(), journal)?;
        }
        Ok(())
    }

    /// Blocks `k` and everything downstream of it, journaling each.
    pub(crate) fn block(
        &mut self,
        k: usize,
        reason: String,
        journal: &WorkerJournal,
    ) -> Result<(), RuntimeError> {
        let mut stack = vec![(k, reason)];
        while let Some((k, reason)) = stack.pop() {
            if self.state[k] != State::Pending {
                continue;
            }
            self.state[k] = State::Blocked;
            self.progress.blocked += 1;
            let q = &self.quanta[k];
            journal.blocked(self.indices[k], q.id, reason.clone())?;
            self.failures.push(Unfinished {
                quantum: self.indices[k],
                task: self.labels[k].clone(),
                data_id: q.data_id.to_string(),
                status: QuantumStatus::Blocked,
                attempts: 0,
                error: reason,
            });
            let why = self.describe(k);
            stack.extend(self.downstream[k].iter().map(|&d| (d, why.clone())));
        }
        Ok(())
    }
}
