//! The Grid Engine engine (Son of Grid Engine 8.1, Debian's `gridengine`
//! packages): `quanta submit --engine gridengine`, `restart`, `cancel`
//! and the Grid Engine part of `quanta status`, as an `array::ArrayScheduler`
//! (the submission, restart, cancel and status procedures are the array
//! driver's, module `batch::array`).
//!
//! Owns: the calls to `qsub`, `qstat` and `qdel`, the cluster lists and
//! the job scripts' Grid Engine lines written into `<bundle>.slurm/` (the
//! work directory's name is the engine-neutral one), the job logs' names,
//! and the holds between arrays. The plan, the state file, the restart
//! policy and the memory supervisor are engine-neutral ([`crate::batch`]).
//!
//! # Jobs
//!
//! The plan's arrays become array jobs (`qsub -t 1-N`). Task i runs the
//! cluster on line i of the array's list (`quanta worker B --cluster C`,
//! with `--mem-limit` when the array asks for memory: the worker applies
//! it with the memory supervisor, [`crate::batch::run_supervised`], as
//! under Slurm). An array holds on its upstream arrays element-wise
//! (`-hold_jid_ad`) when the driver's wait is element-wise, otherwise on
//! all of them (`-hold_jid`); so does the final merge job, on every array.
//!
//! Grid Engine releases a hold when the job it waits for ends, whatever
//! its exit status (it has no `afterok`): a downstream task whose
//! upstream failed runs, finds the upstream quanta unfinished in the
//! journals and journals its quanta as blocked, and `restart` submits
//! them again once their upstream is retried. The scripts map the worker's
//! exit codes 99 and 100 to 1: Grid Engine reads 99 as "run me again" and
//! 100 as "hold me, and everything waiting on me, in the error state".
//!
//! Resources: `partition` is the queue (`-q`), `time` is `h_rt`, `cpus`
//! are slots of the parallel environment `smp` (`-pe smp N`, which
//! `ci/gridengine/start.sh` creates), memory is a scheduling request
//! (`mem_free`) and the worker's limit, not `h_vmem`: Grid Engine would
//! apply `h_vmem` to the supervising worker's own address space as well.

mod qstat;

pub use qstat::GridEngineJob;

use std::path::Path;

use super::array::{ArrayRequest, ArrayScheduler, ArrayWait, ElementScript, Scripts};
use super::error::{BatchError, Result};
use super::state::write_atomic;
use super::tools::{absolute, run_tool, sh_quote};
use super::{Resources, SubmitOptions};

const NAME: &str = "gridengine";

/// The parallel environment `cpus_per_task` asks slots of.
pub const PARALLEL_ENVIRONMENT: &str = "smp";

/// The Grid Engine engine ([`super::BatchEngine`], through the array
/// driver).
#[derive(Debug, Clone, Copy, Default)]
pub struct GridEngine;

/// The end of every job script: Grid Engine gives exit codes 99 (requeue)
/// and 100 (error state, holding every job waiting on this one) meanings
/// no quanta command intends.
const EXIT_MAPPING: &str =
    "rc=$?\n# 99 would requeue the job and 100 hold it in the error state: neither is meant.\ncase $rc in 99|100) rc=1 ;; esac\nexit $rc\n";

impl ArrayScheduler for GridEngine {
    type Job = GridEngineJob;

    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Grid Engine"
    }

    /// `<job>.<task>` for an array task, as `qstat` shows it (Grid Engine
    /// sets `SGE_TASK_ID` to `undefined` outside arrays); the job id
    /// otherwise.
    fn job_from_environment(&self) -> Option<String> {
        let job = std::env::var("JOB_ID").ok()?;
        // JOB_ID alone is too common a name to trust: Grid Engine also
        // sets SGE_TASK_ID in every job it starts.
        let task = std::env::var("SGE_TASK_ID").ok()?;
        Some(match task.parse::<u64>() {
            Ok(task) => format!("{job}.{task}"),
            Err(_) => job,
        })
    }

    /// The cluster list (`<stem>.clusters`, one name per line: task i
    /// runs line i); the script reads line `$SGE_TASK_ID` (1-based) and
    /// passes the memory limit on the command line.
    fn write_elements(
        &self,
        s: &Scripts,
        stem: &str,
        names: &[String],
        mem_mb: Option<u64>,
    ) -> Result<ElementScript> {
        let list_path = s.dir.join(format!("{stem}.clusters"));
        if let Some(bad) = names
            .iter()
            .find(|n| n.is_empty() || n.contains(['\n', '\0']))
        {
            return Err(BatchError::Invalid(format!(
                "cluster name {bad:?} cannot be a line of a Grid Engine cluster list"
            )));
        }
        let mut list = names.join("\n");
        list.push('\n');
        write_atomic(&list_path, list.as_bytes())?;
        let list = sh_quote(&absolute(&list_path)?.to_string_lossy());
        let limit = mem_mb
            .map(|m| format!(" --mem-limit {}", m << 20))
            .unwrap_or_default();
        let worker = format!("{}{limit}", s.worker_command("--cluster \"$cluster\""));
        let body = format!(
            "cluster=$(sed -n \"${{SGE_TASK_ID}}{{p;q;}}\" {list})\n\
             if [ -z \"$cluster\" ]; then\n  echo \"quanta: no cluster on line ${{SGE_TASK_ID}} of \"{list} >&2\n  exit 2\nfi\n\
             {}",
            self.last_command(&worker)
        );
        Ok(ElementScript {
            elements: list_path,
            comment: "task i runs the cluster on line i of the list.",
            body,
        })
    }

    fn last_command(&self, command: &str) -> String {
        format!("{command}\n{EXIT_MAPPING}")
    }

    /// `-hold_jid_ad` task by task, else `-hold_jid` on every upstream
    /// array.
    fn wait(&self, wait: ArrayWait<'_>) -> String {
        match wait {
            ArrayWait::Elementwise(id) => format!("-hold_jid_ad {id}"),
            ArrayWait::All(ids) => format!("-hold_jid {}", ids.join(",")),
        }
    }

    fn submit_array(
        &self,
        s: &Scripts,
        a: &ArrayRequest<'_>,
        opts: &SubmitOptions,
    ) -> Result<String> {
        let mut args = array_args(s, a, opts)?;
        if let Some(h) = a.dependency {
            args.extend(h.split(' ').map(String::from));
        }
        args.push(a.script.to_string_lossy().into_owned());
        qsub(&args)
    }

    fn submit_merge(
        &self,
        s: &Scripts,
        name: &str,
        script: &Path,
        arrays: &[&str],
    ) -> Result<String> {
        let log = s.dir.join(format!("s{}-merge-$JOB_ID.out", s.number));
        let mut args = common_args(name, &log);
        args.extend(["-hold_jid".to_string(), arrays.join(",")]);
        args.push(script.to_string_lossy().into_owned());
        qsub(&args)
    }

    fn cancel_jobs(&self, ids: &[String]) -> Result<()> {
        run_tool("qdel", ids).map(|_| ())
    }

    /// Every job Grid Engine lists (queued, held, running or in the
    /// error state; finished jobs are not listed), from `qstat -xml`.
    fn list_jobs(&self) -> Result<Vec<GridEngineJob>> {
        let args = ["-xml", "-u", "*"].map(String::from);
        let out = run_tool("qstat", &args)?;
        qstat::parse_qstat_xml(&out).map_err(BatchError::Invalid)
    }

    /// `<job>.<task>`: Grid Engine's task ids start at 1.
    fn element_id(&self, array_job: &str, index: usize) -> String {
        format!("{array_job}.{}", index + 1)
    }
}

/// Seconds of a Slurm time string (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`,
/// `D-HH:MM`, `D-HH:MM:SS`), for `h_rt`.
pub fn time_seconds(t: &str) -> Result<u64, String> {
    let bad = || format!("time `{t}` is not MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS");
    let (days, rest) = match t.trim().split_once('-') {
        Some((d, r)) => (Some(d.parse::<u64>().map_err(|_| bad())?), r),
        None => (None, t.trim()),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) | (Some(_), [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(_), [h]) => h * 3600,
        (Some(_), [h, m]) => h * 3600 + m * 60,
        _ => return Err(bad()),
    };
    let total = days.unwrap_or(0) * 86_400 + secs;
    if total == 0 {
        return Err(format!("time `{t}` is no time at all"));
    }
    Ok(total)
}

/// The `qsub` options of a resource request.
fn resource_args(r: &Resources) -> Result<Vec<String>> {
    let mut a = Vec::new();
    if let Some(q) = &r.partition {
        a.extend(["-q".to_string(), q.clone()]);
    }
    if let Some(m) = r.mem_mb {
        a.extend(["-l".to_string(), format!("mem_free={m}M")]);
    }
    if let Some(c) = r.cpus_per_task {
        a.extend([
            "-pe".to_string(),
            PARALLEL_ENVIRONMENT.to_string(),
            c.to_string(),
        ]);
    }
    if let Some(t) = &r.time {
        let secs = time_seconds(t).map_err(BatchError::Invalid)?;
        a.extend(["-l".to_string(), format!("h_rt={secs}")]);
    }
    Ok(a)
}

/// The options every job of a submission gets: a name, its log in the
/// work directory (stderr with stdout), `/bin/sh`, not rerun by Grid
/// Engine on a node failure (restart decides what runs again), the
/// submitter's environment (`-V`, what Slurm's `sbatch` passes by default:
/// `QUANTA_PYTHON` and `PYTHONPATH` for Python tasks, `PGUSER` and
/// `PGPASSFILE` for a registry on a server), and the job id alone on
/// stdout.
fn common_args(name: &str, log: &Path) -> Vec<String> {
    [
        "-terse",
        "-V",
        "-N",
        name,
        "-o",
        &log.to_string_lossy(),
        "-j",
        "y",
        "-S",
        "/bin/sh",
        "-r",
        "n",
    ]
    .map(String::from)
    .to_vec()
}

/// The `qsub` arguments of an array, before its hold and script.
fn array_args(s: &Scripts, a: &ArrayRequest<'_>, opts: &SubmitOptions) -> Result<Vec<String>> {
    let log = s.dir.join("ge-$JOB_ID.$TASK_ID.out");
    let mut args = common_args(&a.name, &log);
    args.extend(["-t".to_string(), format!("1-{}", a.len)]);
    if let Some(t) = opts.throttle {
        args.extend(["-tc".to_string(), t.to_string()]);
    }
    args.extend(resource_args(a.resources)?);
    Ok(args)
}

/// The job id of `qsub -terse` output: `12` for a job, `12.1-4:1` for an
/// array.
pub fn parse_terse_job_id(out: &str) -> Option<String> {
    let first = out.lines().next()?.trim();
    let id = first.split('.').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// Runs `qsub -terse ...` and returns the job id.
fn qsub(args: &[String]) -> Result<String> {
    let out = run_tool("qsub", args)?;
    parse_terse_job_id(&out).ok_or_else(|| BatchError::BadJobId {
        command: format!("qsub {}", args.join(" ")),
        output: out,
    })
}

#[cfg(test)]
mod tests;
