//! The campaign report of quanta: one self-contained HTML page that shows
//! how a campaign went: per-task counts (succeeded, failed, blocked,
//! pending, running), wall-time and peak-memory histograms per task, a
//! timeline of quanta per worker or batch job, the slowest quanta, every
//! failure with its reason and log tail (the first [`Limits::failure_rows`]
//! in full, all of them counted and grouped by reason), the provenance
//! (software, configs, command line, pipeline) and the pipeline graph.
//!
//! Owns: the report's data model ([`ReportBuilder`] aggregates quanta into
//! a [`Report`] as they are handed in, so a million quanta never have to be
//! held as rows), the page's HTML and CSS, every plot as inline SVG drawn
//! here (histograms, timeline), and the layered layout of the pipeline graph
//! (no Graphviz). Everything is inline: the page makes no network request
//! and opens from a file. Every piece of user text (labels, data IDs,
//! errors, log lines, configs, command lines) is escaped ([`escape`]).
//! Elements carry stable ids, classes and `data-*` attributes (documented on
//! [`render_html`]) for tests and scripts that read the page.
//!
//! Must not: query SQL, open bundles or journals, or know the registry's or
//! the journals' types. The butler fills the model, from the registry after
//! a merge (`quanta report --html`) or from a bundle's journals during a
//! campaign (`quanta status --html`).

mod graph;
mod html;
mod model;
mod plots;
mod text;

pub use graph::{layout, GraphLayout, LaidOutEdge, LaidOutNode, NodeKind};
pub use html::{render_html, PAGE_VERSION};
pub use model::{
    BundleInfo, Counts, FailureLine, Histogram, Limits, Observation, QuantumLine, QuantumStatus,
    ReasonLine, Report, ReportBuilder, ReportMeta, TaskInfo, TaskReport, Timeline, TimelineBar,
};
pub use text::{escape, parse_rfc3339_ms};

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("could not write the report {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Renders `report` and writes it to `path` through a temporary file in the
/// same directory (`.NAME.tmp`), synced and renamed into place: a killed
/// writer leaves the previous page (or none), never half of one, and the
/// next run replaces its temporary file. Returns the page's size in bytes.
pub fn write_html(report: &Report, path: &Path) -> Result<u64, ReportError> {
    let page = render_html(report);
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.html".into());
    // A fixed name: a rerun after a kill replaces a killed writer's file.
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(page.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(page.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_through_a_temporary_file_a_rerun_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("page.html");
        // What a writer killed before the rename leaves.
        std::fs::write(dir.path().join(".page.html.tmp"), "half a page").unwrap();
        let report =
            ReportBuilder::new(ReportMeta::default(), Vec::new(), Limits::default()).finish();
        let size = write_html(&report, &out).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("page.html")]);
        let missing = dir.path().join("no/such/dir/page.html");
        let e = write_html(&report, &missing).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/page.html"), "{e}");
    }
}
