use thiserror::Error;

/// Errors of the shared vocabulary: bad universes, names and data IDs.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("dimension universe: {0}")]
    Universe(String),
    #[error("unknown dimension `{0}`")]
    UnknownDimension(String),
    #[error("bad data ID {0}")]
    BadDataId(String),
    #[error("bad name: {0}")]
    BadName(String),
}

impl CoreError {
    pub(crate) fn universe_yaml(e: &serde_yaml_ng::Error) -> Self {
        match e.location() {
            Some(loc) => {
                CoreError::Universe(format!("line {}, column {}: {e}", loc.line(), loc.column()))
            }
            None => CoreError::Universe(e.to_string()),
        }
    }
}
