//! Reading `squeue --json` (OpenAPI v0.0.38, Slurm 22.05). That version
//! ignores `-j` with `--json` and lists every job it remembers, finished
//! ones included (for `MinJobAge`), so callers filter by job id here.

use serde::Deserialize;

use crate::batch::array::ListedJob;

/// One row of `squeue --json`: a job, an array element, or the pending
/// rest of an array (`array_task_id` absent, `array_task_string` "1-5%1").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SlurmJob {
    pub job_id: u64,
    #[serde(default)]
    pub array_job_id: Option<u64>,
    #[serde(default)]
    pub array_task_id: Option<u32>,
    #[serde(default)]
    pub array_task_string: Option<String>,
    #[serde(rename = "job_state")]
    pub state: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Deserialize)]
struct SqueueOutput {
    jobs: Vec<SlurmJob>,
}

pub(super) fn parse_squeue(text: &str) -> Result<Vec<SlurmJob>, String> {
    let out: SqueueOutput =
        serde_json::from_str(text).map_err(|e| format!("squeue --json: unexpected output: {e}"))?;
    Ok(out
        .jobs
        .into_iter()
        .map(|mut j| {
            // A plain job reports array_job_id 0.
            if j.array_job_id == Some(0) {
                j.array_job_id = None;
            }
            j
        })
        .collect())
}

impl SlurmJob {
    /// Queued, running or finishing: anything but a finished state.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
        )
    }

    /// Whether this row is (or, pending, includes) element `task` of array
    /// job `array_job`.
    pub fn is_element(&self, array_job: &str, task: u32) -> bool {
        let Some(a) = self.array_job_id else {
            return false;
        };
        if a.to_string() != array_job {
            return false;
        }
        match (self.array_task_id, &self.array_task_string) {
            (Some(t), _) => t == task,
            (None, Some(s)) => parse_task_ids(s).is_some_and(|ids| ids.contains(&task)),
            (None, None) => false,
        }
    }

    /// `job`, `array_task` or `array_[range]`, as squeue prints them.
    pub fn display_id(&self) -> String {
        match (
            self.array_job_id,
            self.array_task_id,
            &self.array_task_string,
        ) {
            (Some(a), Some(t), _) => format!("{a}_{t}"),
            (Some(a), None, Some(s)) => format!("{a}_[{s}]"),
            _ => self.job_id.to_string(),
        }
    }
}

impl ListedJob for SlurmJob {
    /// The array job of an element (or of the pending rest of an array),
    /// else the job.
    fn submitted_id(&self) -> String {
        self.array_job_id.unwrap_or(self.job_id).to_string()
    }

    fn is_live(&self) -> bool {
        SlurmJob::is_live(self)
    }

    /// Slurm's array indices are the 0-based positions themselves.
    fn is_element(&self, array_job: &str, index: usize) -> bool {
        u32::try_from(index).is_ok_and(|task| SlurmJob::is_element(self, array_job, task))
    }

    fn display_id(&self) -> String {
        SlurmJob::display_id(self)
    }

    fn state(&self) -> &str {
        &self.state
    }
}

/// The task ids of an array range string: `0-9`, `1,3,5-7`, `1-5%2`
/// (throttle ignored), `0-8:2` (step). `None` if it does not parse.
pub fn parse_task_ids(s: &str) -> Option<Vec<u32>> {
    let s = s.split('%').next()?.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, st)) => (r, st.parse::<u32>().ok().filter(|s| *s > 0)?),
            None => (part, 1),
        };
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 1_000_000 {
                    return None;
                }
                out.extend((a..=b).step_by(step as usize));
            }
            None => out.push(range.parse().ok()?),
        }
    }
    Some(out)
}
