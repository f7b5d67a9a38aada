//! A light client: holds only the genesis file and trusts no node. It
//! checks a checkpoint's consortium signature against genesis's group key,
//! an entry's inclusion in a certified log, and that a later certified log
//! extends an earlier one.

use provenance::merkle::{verify_consistency, verify_inclusion, Sha3Hasher, TreeHasher};
use provenance::{Checkpoint, Digest, KeyRing, LedgerEntry, SignedCheckpoint};
use serde_json::Value;

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
    /// The checkpoint's signature is not the consortium's.
    #[error("checkpoint at height {height} is not signed by the consortium of this genesis")]
    BadCheckpoint {
        /// Height.
        height: u64,
    },
    /// A proof does not verify.
    #[error("proof rejected: {0}")]
    BadProof(String),
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
    /// The check needs a part this build leaves out (feature `recompute`).
    #[error("{0} needs the tuner: this verifier was built without the `recompute` feature")]
    NotBuilt(&'static str),
}

/// A verifier holding only a genesis.
#[derive(Debug)]
pub struct LightClient {
    keyring: KeyRing,
    origin: String,
}

fn hex_field(v: &Value, field: &str) -> Result<Vec<u8>, VerifyError> {
    v[field]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| VerifyError::Malformed(format!("no hex field {field:?}")))
}

fn digest_field(v: &Value, field: &str) -> Result<Digest, VerifyError> {
    v[field]
        .as_str()
        .and_then(|s| Digest::from_hex(s).ok())
        .ok_or_else(|| VerifyError::Malformed(format!("no digest field {field:?}")))
}

fn u64_field(v: &Value, field: &str) -> Result<u64, VerifyError> {
    v[field]
        .as_u64()
        .ok_or_else(|| VerifyError::Malformed(format!("no integer field {field:?}")))
}

/// The proof hashes of a JSON answer.
pub fn proof_field(v: &Value) -> Result<Vec<Digest>, VerifyError> {
    v["proof"]
        .as_array()
        .ok_or_else(|| VerifyError::Malformed("no proof".into()))?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(|s| Digest::from_hex(s).ok())
                .ok_or_else(|| VerifyError::Malformed("proof hash".into()))
        })
        .collect()
}

impl LightClient {
    /// A light client of the consortium in `genesis_path`.
    pub fn from_genesis_file(path: &std::path::Path) -> Result<Self, String> {
        let (g, keyring) = genesis::load_genesis(path).map_err(|e| e.to_string())?;
        Ok(Self {
            keyring,
            origin: g.consortium_name,
        })
    }

    /// The genesis keys.
    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }

    /// Parses a checkpoint answer (JSON of `/v1/checkpoint`) and checks its
    /// signature under genesis.
    pub fn checkpoint_from_json(&self, v: &Value) -> Result<SignedCheckpoint, VerifyError> {
        let cp = SignedCheckpoint {
            checkpoint: Checkpoint {
                version: <Checkpoint as provenance::Canonical>::VERSION,
                origin: v["origin"]
                    .as_str()
                    .ok_or_else(|| VerifyError::Malformed("origin".into()))?
                    .to_string(),
                size: u64_field(v, "size")?,
                root: digest_field(v, "root")?,
                height: u64_field(v, "height")?,
            },
            signature: provenance::Bytes(hex_field(v, "signature")?),
        };
        self.verify_checkpoint(&cp)?;
        Ok(cp)
    }

    /// Checks a checkpoint's origin and consortium signature.
    pub fn verify_checkpoint(&self, cp: &SignedCheckpoint) -> Result<(), VerifyError> {
        if cp.checkpoint.origin != self.origin || cp.verify(&self.keyring).is_err() {
            return Err(VerifyError::BadCheckpoint {
                height: cp.checkpoint.height,
            });
        }
        Ok(())
    }

    /// Fetches and checks the node's latest checkpoint.
    pub fn latest_checkpoint(&self, node: &Client) -> Result<SignedCheckpoint, VerifyError> {
        let v = node.get("/v1/checkpoint")?.body;
        self.checkpoint_from_json(&v)
    }

    /// Fetches and checks the checkpoint of a height.
    pub fn checkpoint_at(&self, node: &Client, height: u64) -> Result<SignedCheckpoint, VerifyError> {
        let v = node.get(&format!("/v1/checkpoint?height={height}"))?.body;
        self.checkpoint_from_json(&v)
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
        verify_inclusion::<Sha3Hasher>(
            index,
            cp.checkpoint.size,
            &Sha3Hasher::hash_leaf(leaf),
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
        let v = node
            .get(&format!(
                "/v1/proof/inclusion?index={index}&size={}",
                cp.checkpoint.size
            ))?
            .body;
        let leaf = hex_field(&v, "leaf")?;
        let proof = proof_field(&v)?;
        self.verify_leaf(cp, index, &leaf, &proof)?;
        provenance::decode(&leaf).map_err(|e| VerifyError::Malformed(e.to_string()))
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
        let v = node
            .get(&format!("/v1/proof/consistency?first={a}&second={b}"))?
            .body;
        let proof = proof_field(&v)?;
        self.verify_consistency_proof(first, second, &proof)
    }

    /// Checks a consistency proof between two checkpoints.
    pub fn verify_consistency_proof(
        &self,
        first: &SignedCheckpoint,
        second: &SignedCheckpoint,
        proof: &[Digest],
    ) -> Result<(), VerifyError> {
        verify_consistency::<Sha3Hasher>(
            first.checkpoint.size,
            second.checkpoint.size,
            proof,
            &first.checkpoint.root,
            &second.checkpoint.root,
        )
        .map_err(|e| VerifyError::BadProof(e.to_string()))
    }
}
