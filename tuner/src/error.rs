//! The tuner's one error type.

use provenance::Digest;

/// Everything that can go wrong while training, measuring or emitting.
#[derive(Debug, thiserror::Error)]
pub enum TunerError {
    /// A tensor operation failed (shape mismatch, ...).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A model file does not match the configured architecture.
    #[error("model file does not match the architecture: {0}")]
    ModelMismatch(String),
    /// A blob is malformed.
    #[error("malformed {kind} blob: {reason}")]
    Blob {
        /// Blob kind (sketch, delta, snapshot).
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A digest did not match what was recorded.
    #[error("{what}: expected {expected}, found {found}")]
    DigestMismatch {
        /// What was compared.
        what: String,
        /// Recorded digest.
        expected: Digest,
        /// Recomputed digest.
        found: Digest,
    },
    /// A source could not be cut into examples.
    #[error("source {title}: {reason}")]
    Source {
        /// The source title.
        title: String,
        /// What was wrong.
        reason: String,
    },
    /// The event sink failed (I/O, transport), as opposed to a co-signer
    /// refusing an event.
    #[error("event sink: {0}")]
    Sink(String),
    /// A training step produced a non-finite loss or gradient.
    #[error("step {step}: non-finite {what}")]
    NonFinite {
        /// The step.
        step: u64,
        /// What was non-finite.
        what: &'static str,
    },
    /// Entries are not a campaign's whole record.
    #[error(transparent)]
    Record(#[from] provenance::record::RecordError),
    /// A feature the caller asked for is not built.
    #[error("not implemented: {0}")]
    NotImplemented(String),
}

impl TunerError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        TunerError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// The tuner's result type.
pub type Result<T, E = TunerError> = std::result::Result<T, E>;
