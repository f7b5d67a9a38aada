//! A light client: holds only the genesis file and trusts no node. It
//! checks a checkpoint's signatures against genesis's keys and its
//! witnesses' cosignatures against genesis's witnesses, an entry's
//! inclusion in a certified log, and that a later certified log extends an
//! earlier one.

use provenance::api::CheckpointAnswer;
use provenance::merkle::{verify_consistency, verify_inclusion, LogHasher, TreeHasher};
use provenance::{Digest, KeyRing, LedgerEntry, SignedCheckpoint};

use crate::client::{Client, ClientError};

/// Why the light client rejected what a node served.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Fetching failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The answer is malformed.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The checkpoint's signatures are not the consortium's.
    #[error("checkpoint at height {height} is not signed by the consortium of this genesis: {reason}")]
    BadCheckpoint {
        /// Height.
        height: u64,
        /// Why.
        reason: String,
    },
    /// The checkpoint lacks the witnesses' cosignatures genesis requires,
    /// or carries one that does not verify.
    #[error("checkpoint at height {height} is not witnessed as genesis requires: {reason}")]
    NotWitnessed {
        /// Height.
        height: u64,
        /// Why.
        reason: String,
    },
    /// A proof does not verify.
    #[error("proof rejected: {0}")]
    BadProof(String),
    /// Two checkpoints the consortium signed certify different logs of one
    /// size: evidence of a split view (or of more than f colluding).
    #[error("split view: two checkpoints signed by the consortium certify different logs of size {size}:\n  {first}\n  {second}")]
    SplitView {
        /// The log size.
        size: u64,
        /// One checkpoint (height, root, signature).
        first: String,
        /// The other.
        second: String,
    },
    /// The node serves a checkpoint older than one this verifier already
    /// accepted (`--state`): nothing inconsistent, but not current.
    #[error("the node's checkpoint (height {height}, log size {size}) is older than the one held: height {held_height}, log size {held_size}, root {held_root}")]
    Stale {
        /// The node's checkpoint height.
        height: u64,
        /// Its log size.
        size: u64,
        /// The held checkpoint's height.
        held_height: u64,
        /// Its log size.
        held_size: u64,
        /// Its root.
        held_root: Digest,
    },
    /// The answers were proved under a checkpoint older than `--max-age`:
    /// nothing inconsistent, but not current enough.
    #[error("checkpoint at height {height} (log size {size}) is fresh as of {time} (Unix ms, by {basis}), {age_s} s ago: older than --max-age {max_age_s} s")]
    TooOld {
        /// Its height.
        height: u64,
        /// Its log size.
        size: u64,
        /// Its freshness time (Unix ms).
        time: u64,
        /// What that time is.
        basis: &'static str,
        /// Its age by this machine's clock (s).
        age_s: u64,
        /// The bound (s).
        max_age_s: u64,
    },
    /// An entry's authority signatures do not verify.
    #[error("signature rejected: {0}")]
    BadSignature(String),
    /// A campaign's record is not complete (a record is missing, out of
    /// order, or the close does not name the chain's head).
    #[error("incomplete record: {0}")]
    Incomplete(String),
    /// A blob is missing or does not match what the ledger recorded.
    #[error("blob rejected: {0}")]
    BadBlob(String),
    /// An argument or input file is unusable.
    #[error("{0}")]
    Input(String),
    /// The genesis file is unreadable or invalid.
    #[error(transparent)]
    Genesis(#[from] genesis::Error),
    /// The check needs a part this build leaves out (feature `recompute`).
    #[error("{0} needs the tuner: this verifier was built without the `recompute` feature")]
    NotBuilt(&'static str),
}

impl VerifyError {
    /// Whether the error shows the claim does not hold (a proof, a
    /// signature, a record's completeness or a blob failed: exit 1), as
    /// opposed to a check that could not be made (an unreachable node, a
    /// checkpoint not signed by this genesis, an answer that is not the
    /// API's, a bad argument or genesis file, a part not built: exit 2).
    pub fn is_violation(&self) -> bool {
        matches!(
            self,
            VerifyError::BadProof(_)
                | VerifyError::SplitView { .. }
                | VerifyError::BadSignature(_)
                | VerifyError::Incomplete(_)
                | VerifyError::BadBlob(_)
        )
    }
}

/// A verifier holding only a genesis.
#[derive(Debug)]
pub struct LightClient {
    keyring: KeyRing,
    api_certificates: Vec<Vec<u8>>,
    /// For each checkpoint height accepted with cosignatures, when genesis's
    /// quorum of witnesses had cosigned it (POSIX seconds).
    witnessed: std::sync::Mutex<std::collections::BTreeMap<u64, u64>>,
}

/// What a checkpoint's freshness rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The consortium-signed time of its height (Unix ms).
    Signed(u64),
    /// The time by which genesis's quorum of witnesses had cosigned it
    /// (Unix ms), newer than its signed time.
    Witnessed(u64),
}

impl Freshness {
    /// The time (Unix ms).
    pub fn ms(self) -> u64 {
        match self {
            Freshness::Signed(t) | Freshness::Witnessed(t) => t,
        }
    }

    /// Which time it is, in words.
    pub fn source(self) -> &'static str {
        match self {
            Freshness::Signed(_) => "its consortium-signed time",
            Freshness::Witnessed(_) => "its witnesses' cosignatures",
        }
    }
}

/// A node's answer that is not what the API documents is malformed (not a
/// failure to fetch).
pub(crate) fn answer<T>(r: Result<T, ClientError>) -> Result<T, VerifyError> {
    r.map_err(|e| match e {
        ClientError::Decode(m) => VerifyError::Malformed(m),
        e => VerifyError::Client(e),
    })
}

impl LightClient {
    /// A light client of the consortium in `genesis_path`.
    pub fn from_genesis_file(path: &std::path::Path) -> Result<Self, VerifyError> {
        let (g, keyring) = genesis::load_genesis(path)?;
        Ok(Self {
            keyring,
            api_certificates: g
                .nodes
                .iter()
                .filter(|n| !n.api_certificate.0.is_empty())
                .map(|n| n.api_certificate.0.clone())
                .collect(),
            witnessed: Default::default(),
        })
    }

    /// `node` accepting over https only the API certificates genesis pins.
    pub fn trust(&self, node: Client) -> Client {
        node.pinned(&self.api_certificates)
    }

    /// The genesis keys.
    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }

    /// The signed checkpoint of a checkpoint answer under which answers are
    /// proved (`/v1/checkpoint`, or one embedded in another answer): its
    /// signatures checked under genesis, and its cosignatures: each must
    /// be a genesis witness's and verify, and genesis's quorum must be there.
    pub fn checkpoint_from_answer(&self, a: &CheckpointAnswer) -> Result<SignedCheckpoint, VerifyError> {
        let cp = self.signed_from_answer(a)?;
        let quorum_time = self
            .keyring
            .log()
            .verify_cosignatures(&cp.checkpoint, &a.cosignatures)
            .map_err(|e| VerifyError::NotWitnessed {
                height: cp.checkpoint.height,
                reason: e.to_string(),
            })?;
        if let Some(t) = quorum_time {
            let mut w = self.witnessed.lock().unwrap_or_else(|p| p.into_inner());
            let e = w.entry(cp.checkpoint.height).or_insert(t);
            *e = (*e).max(t);
        }
        Ok(cp)
    }

    /// The signed checkpoint of an answer, its signatures checked under
    /// genesis but not its cosignatures: for a past checkpoint (the one
    /// that drew a campaign's order, one held from an earlier run) that is
    /// checked against a witnessed one.
    pub fn signed_from_answer(&self, a: &CheckpointAnswer) -> Result<SignedCheckpoint, VerifyError> {
        let cp = a.to_signed();
        self.verify_checkpoint(&cp)?;
        // Cosignatures it carries must be genesis witnesses', distinct and
        // valid, whether or not the quorum is there.
        self.keyring
            .log()
            .check_cosignatures(&cp.checkpoint, &a.cosignatures)
            .map_err(|e| VerifyError::NotWitnessed {
                height: cp.checkpoint.height,
                reason: e.to_string(),
            })?;
        // The note text, when given, must be the same checkpoint with the
        // same signatures: nothing in an answer goes unchecked.
        if !a.c2sp.is_empty() && a.c2sp != cp.to_c2sp(&self.keyring, &a.cosignatures) {
            return Err(VerifyError::Malformed(format!(
                "the C2SP note of the checkpoint at height {} is not the checkpoint it comes with",
                cp.checkpoint.height
            )));
        }
        Ok(cp)
    }

    /// Checks a checkpoint's origin and signatures: the consortium's BLS
    /// signature or q validators' note signatures, every one present valid.
    pub fn verify_checkpoint(&self, cp: &SignedCheckpoint) -> Result<(), VerifyError> {
        cp.verify(&self.keyring).map_err(|e| VerifyError::BadCheckpoint {
            height: cp.checkpoint.height,
            reason: e.to_string(),
        })
    }

    /// How fresh `cp` is: the newer of its consortium-signed time and the
    /// time by which genesis's quorum of witnesses had cosigned it.
    pub fn freshness(&self, cp: &SignedCheckpoint) -> Freshness {
        let signed = cp.checkpoint.time.0;
        let w = self.witnessed.lock().unwrap_or_else(|p| p.into_inner());
        match w.get(&cp.checkpoint.height) {
            Some(&t) if t.saturating_mul(1000) > signed => Freshness::Witnessed(t.saturating_mul(1000)),
            _ => Freshness::Signed(signed),
        }
    }

    /// Fetches and checks the node's latest checkpoint (with its
    /// cosignatures).
    pub fn latest_checkpoint(&self, node: &Client) -> Result<SignedCheckpoint, VerifyError> {
        self.checkpoint_from_answer(&answer(node.checkpoint(None))?)
    }

    /// Fetches and checks the checkpoint of a past height (its signatures,
    /// not its cosignatures: a witness cosigns only the checkpoints nodes
    /// submit to it).
    pub fn checkpoint_at(&self, node: &Client, height: u64) -> Result<SignedCheckpoint, VerifyError> {
        self.signed_from_answer(&answer(node.checkpoint(Some(height)))?)
    }

    /// Checks that `leaf` (canonical entry bytes) is at `index` of the log
    /// `cp` certifies.
    pub fn verify_leaf(
        &self,
        cp: &SignedCheckpoint,
        index: u64,
        leaf: &[u8],
        proof: &[Digest],
    ) -> Result<(), VerifyError> {
        self.verify_checkpoint(cp)?;
        verify_inclusion::<LogHasher>(
            index,
            cp.checkpoint.size,
            &LogHasher::hash_leaf(leaf),
            proof,
            &cp.checkpoint.root,
        )
        .map_err(|e| VerifyError::BadProof(e.to_string()))
    }

    /// Fetches and checks the inclusion of log entry `index` under `cp`;
    /// returns the entry.
    pub fn fetch_entry(
        &self,
        node: &Client,
        cp: &SignedCheckpoint,
        index: u64,
    ) -> Result<LedgerEntry, VerifyError> {
        let a = answer(node.inclusion_proof(index, cp.checkpoint.size))?;
        if (a.index, a.size) != (index, cp.checkpoint.size) {
            return Err(VerifyError::Malformed(format!(
                "asked for entry {index} in the log of size {}, answered with entry {} of size {}",
                cp.checkpoint.size, a.index, a.size
            )));
        }
        self.verify_leaf(cp, index, a.leaf.as_slice(), &a.proof)?;
        provenance::decode(a.leaf.as_slice()).map_err(|e| VerifyError::Malformed(e.to_string()))
    }

    /// Checks that the log certified by `second` extends the one certified
    /// by `first`, with a proof fetched from `node`.
    pub fn verify_extends(
        &self,
        node: &Client,
        first: &SignedCheckpoint,
        second: &SignedCheckpoint,
    ) -> Result<(), VerifyError> {
        self.verify_checkpoint(first)?;
        self.verify_checkpoint(second)?;
        let (a, b) = (first.checkpoint.size, second.checkpoint.size);
        let c = answer(node.consistency_proof(a, b))?;
        if (c.first, c.second) != (a, b) {
            return Err(VerifyError::Malformed(format!(
                "asked for a consistency proof {a} -> {b}, answered with {} -> {}",
                c.first, c.second
            )));
        }
        let proof = c.proof;
        self.verify_consistency_proof(first, second, &proof)
    }

    /// Checks a consistency proof between two checkpoints.
    pub fn verify_consistency_proof(
        &self,
        first: &SignedCheckpoint,
        second: &SignedCheckpoint,
        proof: &[Digest],
    ) -> Result<(), VerifyError> {
        verify_consistency::<LogHasher>(
            first.checkpoint.size,
            second.checkpoint.size,
            proof,
            &first.checkpoint.root,
            &second.checkpoint.root,
        )
        .map_err(|e| VerifyError::BadProof(e.to_string()))
    }
}
