//! HTCondor DAGMan files for a bundle (`quanta submit --engine htcondor
//! --dry-run --out DIR`): no HTCondor runs here, so this only writes files
//! for a site to submit with `condor_submit_dag`.
//!
//! Owns: the file layout. One DAG node per cluster running `quanta worker
//! --cluster`, a `PARENT … CHILD` line for every cluster another reads
//! from (DAGMan handles per-node edges, so no levels are needed), `RETRY`
//! with `UNLESS-EXIT 2` (quanta exits 2 on bad input, which a retry cannot
//! fix), memory that grows with the retry number through the node's
//! `$(RETRY)` (`request_memory = mem × multiplier^retry`, capped, computed
//! with `$INT()`, HTCondor 8.8 or later; the worker gets the same number as
//! its `--mem-limit`), and a `FINAL` node that runs `quanta merge
//! --incomplete` whatever happened. The cluster name travels as the VARS
//! macro `qcluster`: submit macros are case-insensitive, and `$(Cluster)`
//! is HTCondor's own.
//! Must not: call HTCondor. Status, cancel and restart need a pool (the
//! `condor_q`/`condor_rm` of a schedd) and return
//! [`BatchError::Unsupported`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quanta_core::CampaignProgress;

use super::error::{io, BatchError, Result};
use super::plan::{cluster_resources, levels, view, ClusterDeps};
use super::state::{journal_dir, write_atomic};
use super::{
    BatchEngine, BatchStatus, RetryPolicy, SubmitOptions, SubmitReport, SubmitRequest, Submitted,
};

/// How the DAG retries.
#[derive(Debug, Clone, Copy)]
pub struct DagOptions {
    pub retries: u32,
    pub memory_multiplier: f64,
    pub max_mem_mb: Option<u64>,
}

/// The HTCondor engine ([`BatchEngine`]): DAGMan files only.
#[derive(Debug, Clone, Copy, Default)]
pub struct HtCondor;

const NEEDS: &str = "an HTCondor pool (this engine only writes DAGMan files: `quanta submit --engine htcondor --dry-run --out DIR`)";

fn unsupported(operation: &'static str) -> BatchError {
    BatchError::Unsupported {
        engine: "htcondor",
        operation,
        needs: NEEDS,
    }
}

impl BatchEngine for HtCondor {
    fn name(&self) -> &'static str {
        "htcondor"
    }

    /// Never: there is no HTCondor pool here to run jobs (DAGMan files
    /// only), so no process of quanta runs as an HTCondor job.
    fn job_from_environment(&self) -> Option<String> {
        None
    }

    fn submit(
        &self,
        bundle: &Path,
        opts: &SubmitOptions,
        req: &SubmitRequest,
    ) -> Result<Submitted> {
        let Some(out) = req.out.as_deref().filter(|_| req.dry_run) else {
            return Err(BatchError::Invalid(
                "--engine htcondor only writes files: give --dry-run --out DIR".into(),
            ));
        };
        let m = req.memory.memory_multiplier;
        if !(m.is_finite() && m >= 1.0) {
            return Err(BatchError::Invalid(format!(
                "--memory-multiplier must be at least 1, got {m}"
            )));
        }
        let dag = DagOptions {
            retries: req.node_retries,
            memory_multiplier: m,
            max_mem_mb: req.memory.max_mem_mb,
        };
        write_dag(bundle, out, opts, &dag).map(Submitted::Files)
    }

    fn status(
        &self,
        _bundle: &Path,
        _known: Option<(&Path, &CampaignProgress)>,
    ) -> Result<Option<BatchStatus>> {
        Err(unsupported("status"))
    }

    fn cancel(&self, _bundle: &Path) -> Result<Vec<String>> {
        Err(unsupported("cancel"))
    }

    fn restart(
        &self,
        _bundle: &Path,
        _opts: &SubmitOptions,
        _policy: RetryPolicy,
    ) -> Result<SubmitReport> {
        Err(unsupported("restart"))
    }
}

/// The files written, relative to the output directory.
pub const DAG_FILE: &str = "quanta.dag";
pub const CLUSTER_SUB: &str = "cluster.sub";
pub const MERGE_SUB: &str = "merge.sub";

/// DAGMan VARS values are double-quoted; backslash and quote escaped.
fn vars_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An argument inside a submit file's new-style `arguments = "…"`: single
/// quotes group, a single quote is doubled, a double quote is doubled.
fn arg_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''").replace('"', "\"\""))
}

/// Writes the DAG and submit files for `bundle` into `out`; returns their
/// paths.
pub fn write_dag(
    bundle: &Path,
    out: &Path,
    opts: &SubmitOptions,
    dag: &DagOptions,
) -> Result<Vec<PathBuf>> {
    let v = view(bundle)?;
    let all: Vec<usize> = (0..v.clusters.len()).collect();
    let (_, deps): (_, ClusterDeps) = levels(&v, &all)?;
    std::fs::create_dir_all(out).map_err(io(out, "creating the output directory"))?;
    let journal = journal_dir(bundle, opts);
    let exe = opts.quanta_exe.to_string_lossy();

    let mut d = String::new();
    let _ = writeln!(
        d,
        "# quanta: {} clusters of {} as DAG nodes; submit with condor_submit_dag {DAG_FILE}",
        v.clusters.len(),
        bundle.display()
    );
    for (ci, c) in v.clusters.iter().enumerate() {
        let mem = cluster_resources(&v, ci, opts).mem_mb.unwrap_or(2048);
        let _ = writeln!(d, "JOB c{ci} {CLUSTER_SUB}");
        let _ = writeln!(
            d,
            "VARS c{ci} qcluster={} mem_mb=\"{mem}\" retry=\"$(RETRY)\"",
            vars_quote(&c.name)
        );
        if dag.retries > 0 {
            let _ = writeln!(d, "RETRY c{ci} {} UNLESS-EXIT 2", dag.retries);
        }
    }
    for (c, ups) in &deps {
        if ups.is_empty() {
            continue;
        }
        let parents: BTreeSet<String> = ups.iter().map(|u| format!("c{u}")).collect();
        let _ = writeln!(
            d,
            "PARENT {} CHILD c{c}",
            parents.into_iter().collect::<Vec<_>>().join(" ")
        );
    }
    let _ = writeln!(d, "FINAL merge {MERGE_SUB}");

    let cap = dag
        .max_mem_mb
        .map(|m| format!("MIN({{{m}, {{expr}}}})"))
        .unwrap_or_else(|| "{expr}".into());
    let grow = format!("$(mem_mb) * pow({:.3}, $(retry))", dag.memory_multiplier);
    let memory = cap.replace("{expr}", &grow);
    let cluster_sub = format!(
        "# One cluster of the bundle per job; memory grows with each DAGMan retry.\n\
         universe = vanilla\n\
         executable = {exe}\n\
         memory_mb = $INT({memory})\n\
         arguments = \"worker {} --cluster '$(qcluster)' --journal {} --mem-limit $(memory_mb)M\"\n\
         request_memory = $(memory_mb)\n\
         request_cpus = 1\n\
         output = logs/c$(ClusterId).out\n\
         error = logs/c$(ClusterId).err\n\
         log = quanta.log\n\
         queue\n",
        arg_quote(&bundle.to_string_lossy()),
        arg_quote(&journal.to_string_lossy()),
    );
    let merge_sub = format!(
        "# FINAL node: fold whatever succeeded into the registry.\n\
         universe = vanilla\n\
         executable = {exe}\n\
         arguments = \"merge {} {} --journals {} --incomplete\"\n\
         request_memory = 1024\n\
         output = logs/merge.$(ClusterId).out\n\
         error = logs/merge.$(ClusterId).err\n\
         log = quanta.log\n\
         queue\n",
        arg_quote(&opts.repo.to_string_lossy()),
        arg_quote(&bundle.to_string_lossy()),
        arg_quote(&journal.to_string_lossy()),
    );
    let mut written = Vec::new();
    for (name, text) in [
        (DAG_FILE, d),
        (CLUSTER_SUB, cluster_sub),
        (MERGE_SUB, merge_sub),
    ] {
        let p = out.join(name);
        write_atomic(&p, text.as_bytes())?;
        written.push(p);
    }
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs, "creating"))?;
    Ok(written)
}
