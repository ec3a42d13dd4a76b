//! The submission state file, `<bundle>.slurm.json` (its name kept from
//! when Slurm was the only engine), and the work directory next to the
//! bundle, `<bundle>.slurm/`. Written atomically (temporary file and
//! rename), so a killed submit leaves the old state or the new one.
//!
//! The state records per cluster the memory granted and how often it was
//! submitted, and per submission the jobs an engine created: job ids are
//! the engine's own strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{io, BatchError, Result};
use super::plan::Resources;

/// State file format version.
pub const STATE_VERSION: u32 = 1;

/// The submission state, `<bundle>.slurm.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionState {
    pub version: u32,
    /// The engine that submitted (`BatchEngine::name`); states written
    /// before engines were recorded are Slurm's.
    #[serde(default = "slurm_engine")]
    pub engine: String,
    pub bundle: PathBuf,
    pub bundle_id: quanta_core::Uuid,
    pub repo: PathBuf,
    pub journal_dir: PathBuf,
    /// Per cluster: memory granted on its latest submission and how many
    /// times it was submitted.
    pub clusters: BTreeMap<String, ClusterState>,
    /// One per `submit` or `restart`, oldest first.
    pub submissions: Vec<Submission>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub mem_mb: Option<u64>,
    pub submitted: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub number: u32,
    pub time: String,
    pub arrays: Vec<ArrayJob>,
    pub merge_job: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayJob {
    pub job_id: String,
    pub level: usize,
    /// Element i runs `clusters[i]`.
    pub clusters: Vec<String>,
    pub resources: Resources,
    /// What an element reads to find its cluster: Slurm's array map,
    /// Grid Engine's cluster list.
    pub map: PathBuf,
    /// The wait on upstream arrays as the engine was given it (Slurm:
    /// `--dependency`, Grid Engine: `-hold_jid_ad ID` or `-hold_jid IDS`).
    pub dependency: Option<String>,
}

fn slurm_engine() -> String {
    "slurm".into()
}

impl SubmissionState {
    /// Refuses to act on another engine's submission (`quanta cancel` and
    /// `restart` default to `--engine slurm`; Slurm must not resubmit what
    /// Grid Engine runs).
    pub(crate) fn check_engine(&self, engine: &str) -> Result<()> {
        if self.engine == engine {
            return Ok(());
        }
        Err(BatchError::Invalid(format!(
            "{} was submitted with --engine {}, not {engine}; pass --engine {}",
            self.bundle.display(),
            self.engine,
            self.engine
        )))
    }

    /// Every job id this submission created (arrays and merge jobs).
    pub fn job_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.submissions {
            out.extend(s.arrays.iter().map(|a| a.job_id.clone()));
            out.extend(s.merge_job.clone());
        }
        out
    }

    /// The cluster an array element ran: (array job id, task id) → name.
    pub fn element_cluster(&self, array_job: &str, task: u32) -> Option<&str> {
        self.submissions
            .iter()
            .flat_map(|s| &s.arrays)
            .find(|a| a.job_id == array_job)
            .and_then(|a| a.clusters.get(task as usize))
            .map(String::as_str)
    }
}

/// `<bundle>.slurm.json`.
pub fn state_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".slurm.json");
    PathBuf::from(s)
}

/// `<bundle>.slurm/`: maps, scripts, job logs.
pub fn work_dir(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".slurm");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the old or the new content, never a half.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io(&tmp, "writing"))?;
    std::fs::rename(&tmp, path).map_err(io(path, "renaming into place"))
}

pub fn load_state(bundle: &Path) -> Result<SubmissionState> {
    let path = state_path(bundle);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BatchError::NotSubmitted {
                bundle: bundle.to_path_buf(),
                state: path,
            })
        }
        Err(e) => return Err(io(&path, "reading")(e)),
    };
    let state: SubmissionState =
        serde_json::from_slice(&bytes).map_err(|e| BatchError::BadState {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    if state.version != STATE_VERSION {
        return Err(BatchError::BadState {
            path,
            detail: format!(
                "format version {} (this quanta writes {STATE_VERSION})",
                state.version
            ),
        });
    }
    Ok(state)
}

pub(crate) fn save_state(state: &SubmissionState) -> Result<()> {
    let path = state_path(&state.bundle);
    let text = serde_json::to_vec_pretty(state).map_err(|e| BatchError::BadState {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&path, &text)
}

/// Where the jobs of `bundle` journal: `--journal-dir`, else the
/// bundle's own journal directory.
pub(crate) fn journal_dir(bundle: &Path, opts: &super::SubmitOptions) -> PathBuf {
    opts.journal_dir
        .clone()
        .unwrap_or_else(|| quanta_core::journal_dir_for(bundle))
}

/// The state of a first submission of `bundle` (its id `bundle_id`) by
/// `engine`; refused when the bundle was submitted before.
pub(crate) fn fresh_state(
    engine: &str,
    bundle: &Path,
    bundle_id: quanta_core::Uuid,
    opts: &super::SubmitOptions,
) -> Result<SubmissionState> {
    if state_path(bundle).exists() {
        return Err(BatchError::Invalid(format!(
            "{} exists: this bundle was already submitted; use `quanta restart` (or remove the file to start over)",
            state_path(bundle).display()
        )));
    }
    let journal_dir = journal_dir(bundle, opts);
    Ok(SubmissionState {
        version: STATE_VERSION,
        engine: engine.to_string(),
        bundle: bundle.to_path_buf(),
        bundle_id,
        repo: opts.repo.clone(),
        journal_dir,
        clusters: BTreeMap::new(),
        submissions: Vec::new(),
    })
}

/// Records a submission's jobs: per cluster the memory it was given and
/// one more submission; then writes the state.
pub(crate) fn record_submission(
    state: &mut SubmissionState,
    arrays: &[ArrayJob],
    merge_job: Option<String>,
) -> Result<()> {
    for a in arrays {
        for name in &a.clusters {
            let e = state.clusters.entry(name.clone()).or_insert(ClusterState {
                mem_mb: None,
                submitted: 0,
            });
            e.mem_mb = a.resources.mem_mb;
            e.submitted += 1;
        }
    }
    state.submissions.push(Submission {
        number: state.submissions.len() as u32 + 1,
        time: quanta_core::now_rfc3339(),
        arrays: arrays.to_vec(),
        merge_job,
    });
    save_state(state)
}
