//! The crate's one error type: every module's error, each kept whole so a
//! caller can still match the kind it cares about.

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes that are no valid object.
    #[error(transparent)]
    Decode(#[from] crate::codec::DecodeError),
    /// A label (authority id, license, purpose, data class) is invalid.
    #[error(transparent)]
    Label(#[from] crate::ids::LabelError),
    /// An entry's signers could not be determined or did not check out.
    #[error(transparent)]
    Entry(#[from] crate::entry::EntryError),
    /// A signature is missing, bad or unexpected.
    #[error(transparent)]
    Signature(#[from] crate::crypto::SignatureError),
    /// A checkpoint does not verify.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// A block does not apply to the ledger state.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A genesis breaks a rule.
    #[error(transparent)]
    Genesis(#[from] crate::genesis::GenesisError),
    /// Entries are not a campaign's whole record.
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    /// A Merkle proof does not verify.
    #[error(transparent)]
    Proof(#[from] crate::merkle::ProofError),
    /// A text cannot be cut as its manifest says.
    #[error(transparent)]
    Segmentation(#[from] crate::manifest::SegmentationError),
    /// An index proof or page does not verify.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
}
