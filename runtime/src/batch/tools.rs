//! What every engine that drives command-line tools needs: running a tool
//! and reading its output, quoting for the job scripts, absolute paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::{io, BatchError, Result};

/// Runs `program args…`; its stdout, or the failure with its stderr.
pub(crate) fn run_tool(program: &str, args: &[String]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| BatchError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(BatchError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(io(p, "making the path absolute"))
}
