//! Checkpoints: (log origin, size, root, height, time, index) signed by the
//! consortium, and their C2SP `tlog-checkpoint` signed-note text.
//!
//! The note body is
//!
//! ```text
//! <origin>\n<size>\n<base64 root>\nheight <height>\ntime <unix ms>\nindex <base64 index root>\n
//! ```
//!
//! (`height`, `time` and `index` are checkpoint extension lines; `index` is
//! the root of the authenticated index of sources and campaigns at
//! `size`, [`crate::index`]). The origin is unique to the consortium
//! (chosen at genesis). A checkpoint carries two kinds of log signature,
//! each a signature line named by the origin:
//!
//! * each signing validator's Ed25519 note signature over the body (type
//!   0x01, its node key from genesis): any C2SP note verifier given the
//!   validators' verifier keys checks these;
//! * the consortium's threshold BLS signature over the domain-tagged body,
//!   key id `SHA-256(origin || "\n" || 0xff || "govtune-bls12381-threshold"
//!   || group public key)[:4]` (0xff: the type byte of algorithms without
//!   an assigned one).
//!
//! A verifier accepts a checkpoint with the BLS signature or with q
//! validator signatures, and refuses one with any signature that does not
//! verify. Witnesses' cosignatures ([`Cosignature`], C2SP tlog-cosignature)
//! are further signature lines, kept beside the checkpoint.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::codec::{limit, Canonical, DecodeError};
use crate::crypto::{signing_message, KeyRing, SigningDomain};
use crate::digest::{Bytes, Digest, ObjectKind};
use crate::genesis::Genesis;
use crate::note::{self, SignatureLine};
use crate::Timestamp;

const ALGORITHM: &[u8] = b"govtune-bls12381-threshold";

/// A log state at a consensus height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u16,
    /// Log origin (unique to the consortium, from genesis).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 root of the log at `size`.
    pub root: Digest,
    /// Consensus height that produced it.
    pub height: u64,
    /// The stamp of the block at `height` (Unix ms): its leader's clock,
    /// never below its parent's and never ahead of an honest voter's clock
    /// by more than the consensus skew bound, so a checkpoint cannot claim
    /// to be newer than it is.
    pub time: Timestamp,
    /// Root of the authenticated index ([`crate::index`]) over the log's
    /// first `size` entries.
    pub index: Digest,
}

impl Canonical for Checkpoint {
    const KIND: ObjectKind = ObjectKind::Checkpoint;
    /// 4: `index` added. 5: signed checkpoints carry validators' note
    /// signatures.
    const VERSION: u16 = 5;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        limit(Self::KIND, "origin", self.origin.len(), 256)?;
        if self.origin.is_empty() || self.origin.contains('\n') || self.origin.trim() != self.origin {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "origin",
                reason: "must be one non-empty line without surrounding spaces".into(),
            });
        }
        Ok(())
    }
}

/// Why a checkpoint or its note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note text is not a well-formed checkpoint.
    #[error("malformed checkpoint note: {0}")]
    Malformed(&'static str),
    /// The checkpoint is another log's.
    #[error("origin {found:?} is not this consortium's log {expected:?}")]
    Origin {
        /// The checkpoint's origin.
        found: String,
        /// Genesis's.
        expected: String,
    },
    /// The consortium signature does not verify.
    #[error("consortium signature does not verify")]
    BadSignature,
    /// A validator's note signature does not verify, names no validator,
    /// or repeats one.
    #[error("validator {0}'s note signature does not verify, is not a validator's or is repeated")]
    BadValidatorSignature(u16),
    /// Neither the BLS signature nor q validator signatures.
    #[error("signed by {have} validators and no consortium signature: q = {need} are required")]
    TooFewSignatures {
        /// Valid validator signatures.
        have: usize,
        /// q.
        need: usize,
    },
    /// A cosignature does not verify, names no witness of genesis, or
    /// repeats one.
    #[error("cosignature by {0:?} does not verify, is not a genesis witness's or is repeated")]
    BadCosignature(String),
    /// Fewer valid cosignatures than genesis requires.
    #[error("cosigned by {have} witnesses: genesis requires {need}")]
    NotWitnessed {
        /// Valid cosignatures.
        have: usize,
        /// Genesis's quorum.
        need: usize,
    },
}

impl Checkpoint {
    /// The signed-note body.
    pub fn note_body(&self) -> String {
        format!(
            "{}\n{}\n{}\nheight {}\ntime {}\nindex {}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0),
            self.height,
            self.time.0,
            B64.encode(self.index.0)
        )
    }

    /// The message the consortium signs.
    pub fn signing_message(&self) -> Vec<u8> {
        signing_message(SigningDomain::Checkpoint, self.note_body().as_bytes())
    }
}

/// One validator's Ed25519 note signature over a checkpoint's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorSignature {
    /// Its validator index.
    pub validator: u16,
    /// Ed25519 signature (64 bytes) by its node key over the note body.
    pub signature: Bytes,
}

/// A checkpoint with its log signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Combined consortium BLS signature (96 bytes), or empty.
    pub signature: Bytes,
    /// Validators' note signatures, by ascending validator index.
    pub validators: Vec<ValidatorSignature>,
}

impl Canonical for SignedCheckpoint {
    const KIND: ObjectKind = ObjectKind::Checkpoint;
    const VERSION: u16 = 5;
    fn declared_version(&self) -> u16 {
        self.checkpoint.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        self.checkpoint.check()?;
        limit(Self::KIND, "signature", self.signature.len(), 96)?;
        limit(Self::KIND, "validators", self.validators.len(), 1024)?;
        for v in &self.validators {
            limit(Self::KIND, "validator signature", v.signature.len(), 64)?;
        }
        Ok(())
    }
}

/// A validator's checkpoint note key (its node key).
pub struct NoteSigner {
    validator: u16,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// Validator `validator`'s signer from its node secret.
    pub fn new(validator: u16, node_secret: &[u8; 32]) -> Self {
        Self {
            validator,
            key: ed25519_dalek::SigningKey::from_bytes(node_secret),
        }
    }

    /// Its note signature over `cp`'s body.
    pub fn sign(&self, cp: &Checkpoint) -> ValidatorSignature {
        use ed25519_dalek::Signer as _;
        ValidatorSignature {
            validator: self.validator,
            signature: Bytes(self.key.sign(cp.note_body().as_bytes()).to_bytes().to_vec()),
        }
    }
}

/// A witness's cosignature of a checkpoint (C2SP tlog-cosignature v1,
/// Ed25519): a statement that, at `time`, this was the largest checkpoint
/// of the log the witness had seen, consistent with every earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    /// The witness's name in genesis.
    pub witness: String,
    /// When it cosigned (POSIX seconds).
    pub time: u64,
    /// Ed25519 signature (64 bytes) over
    /// [`note::cosignature_message`].
    pub signature: Bytes,
}

impl Cosignature {
    /// `witness` (named `name`, secret key `key`) cosigns `checkpoint` at
    /// `time`.
    pub fn sign(name: &str, key: &ed25519_dalek::SigningKey, checkpoint: &Checkpoint, time: u64) -> Self {
        use ed25519_dalek::Signer as _;
        let sig = key.sign(&note::cosignature_message(&checkpoint.note_body(), time));
        Self {
            witness: name.to_string(),
            time,
            signature: Bytes(sig.to_bytes().to_vec()),
        }
    }

    /// The cosignature a signature line holds, if it is one (`key id ||
    /// u64be(time) || 64-byte signature`); its key id is not checked here.
    pub fn from_line(l: &SignatureLine) -> Option<Self> {
        if l.blob.len() != 4 + 8 + 64 {
            return None;
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&l.blob[4..12]);
        Some(Self {
            witness: l.name.clone(),
            time: u64::from_be_bytes(time),
            signature: Bytes(l.blob[12..].to_vec()),
        })
    }

    /// Its signature line.
    pub fn line(&self, key: &[u8; 32]) -> SignatureLine {
        let mut blob = note::key_id(&self.witness, &[note::COSIGNATURE_V1], key).to_vec();
        blob.extend_from_slice(&self.time.to_be_bytes());
        blob.extend_from_slice(self.signature.as_slice());
        SignatureLine {
            name: self.witness.clone(),
            blob,
        }
    }
}

/// The keys that sign a consortium's checkpoints and witness them, from
/// genesis: the origin, each validator's note key, the consortium's BLS key
/// id, q, the witnesses and their quorum.
#[derive(Debug, Clone)]
pub struct LogKeys {
    origin: String,
    validators: Vec<([u8; 32], [u8; 4])>,
    q: usize,
    witnesses: Vec<(String, [u8; 32], [u8; 4])>,
    witness_quorum: usize,
    witness_interval_ms: u64,
}

fn ed25519_verifies(key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(k), Ok(s)) = (
        ed25519_dalek::VerifyingKey::from_bytes(key),
        ed25519_dalek::Signature::from_slice(signature),
    ) else {
        return false;
    };
    k.verify_strict(message, &s).is_ok()
}

impl LogKeys {
    /// The log keys of a genesis (its keys were checked by
    /// [`Genesis::validate`]).
    pub(crate) fn from_genesis(g: &Genesis) -> Self {
        let key32 = |b: &Bytes| <[u8; 32]>::try_from(b.as_slice()).unwrap_or([0; 32]);
        Self {
            origin: g.origin.clone(),
            validators: g
                .validators()
                .map(|n| {
                    let k = key32(&n.node_key);
                    (k, note::key_id(&g.origin, &[note::ED25519], &k))
                })
                .collect(),
            q: usize::from(g.consortium.q),
            witnesses: g
                .witnessing
                .witnesses
                .iter()
                .map(|w| {
                    let k = key32(&w.key);
                    (
                        w.name.clone(),
                        k,
                        note::key_id(&w.name, &[note::COSIGNATURE_V1], &k),
                    )
                })
                .collect(),
            witness_quorum: usize::from(g.witnessing.quorum),
            witness_interval_ms: g.witnessing.interval_ms,
        }
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Cosignatures a light client requires.
    pub fn witness_quorum(&self) -> usize {
        self.witness_quorum
    }

    /// How often nodes submit to the witnesses (ms).
    pub fn witness_interval_ms(&self) -> u64 {
        self.witness_interval_ms
    }

    /// The witnesses' names and keys, as genesis lists them.
    pub fn witnesses(&self) -> impl Iterator<Item = (&str, &[u8; 32])> {
        self.witnesses.iter().map(|(n, k, _)| (n.as_str(), k))
    }

    /// Each validator's C2SP verifier key, by validator index.
    pub fn validator_verifier_keys(&self) -> Vec<String> {
        self.validators
            .iter()
            .map(|(k, _)| note::verifier_key(&self.origin, note::ED25519, k))
            .collect()
    }

    /// Validator `v`'s note key.
    pub fn validator_key(&self, v: u16) -> Option<&[u8; 32]> {
        self.validators.get(usize::from(v)).map(|(k, _)| k)
    }

    /// q: validator signatures that stand for the consortium.
    pub fn q(&self) -> usize {
        self.q
    }

    /// Checks validator `v`'s note signature over `cp`.
    pub fn verify_validator(&self, cp: &Checkpoint, v: &ValidatorSignature) -> bool {
        self.validator_key(v.validator)
            .is_some_and(|k| ed25519_verifies(k, cp.note_body().as_bytes(), v.signature.as_slice()))
    }

    /// Checks one cosignature of `cp` by a genesis witness.
    pub fn verify_cosignature(&self, cp: &Checkpoint, c: &Cosignature) -> bool {
        c.time <= i64::MAX as u64
            && self
                .witnesses
                .iter()
                .find(|(n, _, _)| *n == c.witness)
                .is_some_and(|(_, k, _)| {
                    ed25519_verifies(
                        k,
                        &note::cosignature_message(&cp.note_body(), c.time),
                        c.signature.as_slice(),
                    )
                })
    }

    /// Checks `cosignatures` of `cp`: every one must be a distinct genesis
    /// witness's and verify. Returns their times (POSIX seconds).
    pub fn check_cosignatures(
        &self,
        cp: &Checkpoint,
        cosignatures: &[Cosignature],
    ) -> Result<Vec<u64>, CheckpointError> {
        let mut seen = std::collections::BTreeSet::new();
        cosignatures
            .iter()
            .map(|c| {
                if seen.insert(c.witness.as_str()) && self.verify_cosignature(cp, c) {
                    Ok(c.time)
                } else {
                    Err(CheckpointError::BadCosignature(c.witness.clone()))
                }
            })
            .collect()
    }

    /// [`Self::check_cosignatures`], and at least the quorum must be there.
    /// Returns the time (POSIX seconds) by which the quorum had cosigned
    /// (the quorum-th newest cosignature), `None` when genesis requires
    /// none.
    pub fn verify_cosignatures(
        &self,
        cp: &Checkpoint,
        cosignatures: &[Cosignature],
    ) -> Result<Option<u64>, CheckpointError> {
        let mut times = self.check_cosignatures(cp, cosignatures)?;
        if times.len() < self.witness_quorum {
            return Err(CheckpointError::NotWitnessed {
                have: times.len(),
                need: self.witness_quorum,
            });
        }
        if self.witness_quorum == 0 {
            return Ok(None);
        }
        times.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Some(times[self.witness_quorum - 1]))
    }
}

/// Reads the extension line `<name> <n>` (a decimal number without
/// leading zeros).
fn extension(line: Option<&str>, name: &'static str) -> Result<u64, CheckpointError> {
    use CheckpointError::Malformed;
    let malformed = || {
        Malformed(match name {
            "height" => "fourth line must be `height <n>`, n decimal without leading zeros",
            _ => "fifth line must be `time <ms>`, ms decimal without leading zeros",
        })
    };
    let text = line
        .and_then(|l| l.strip_prefix(name))
        .and_then(|l| l.strip_prefix(' '))
        .ok_or_else(malformed)?;
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return Err(malformed());
    }
    text.parse().map_err(|_| malformed())
}

/// The signed-note key id of the consortium's BLS key.
pub fn note_key_hash(key_name: &str, group_key: &[u8; 48]) -> [u8; 4] {
    let mut kind = vec![0xff];
    kind.extend_from_slice(ALGORITHM);
    note::key_id(key_name, &kind, group_key)
}

impl SignedCheckpoint {
    /// Verifies the checkpoint's signatures under genesis: its origin, the
    /// BLS signature if present, every validator signature present; and
    /// that it has the BLS signature or q validator signatures.
    pub fn verify(&self, keyring: &KeyRing) -> Result<(), CheckpointError> {
        self.verify_with(keyring, |m, s| keyring.verify_consortium(m, s))
    }

    /// [`Self::verify`], checking the BLS signature with `bls` (a cache).
    pub fn verify_with(
        &self,
        keyring: &KeyRing,
        bls: impl FnOnce(&[u8], &[u8]) -> bool,
    ) -> Result<(), CheckpointError> {
        let keys = keyring.log();
        let c = &self.checkpoint;
        if c.origin != keys.origin() {
            return Err(CheckpointError::Origin {
                found: c.origin.clone(),
                expected: keys.origin().to_string(),
            });
        }
        let mut last = None;
        for v in &self.validators {
            if last.is_some_and(|l| l >= v.validator) || !keys.verify_validator(c, v) {
                return Err(CheckpointError::BadValidatorSignature(v.validator));
            }
            last = Some(v.validator);
        }
        if !self.signature.is_empty() {
            if !bls(&c.signing_message(), self.signature.as_slice()) {
                return Err(CheckpointError::BadSignature);
            }
            return Ok(());
        }
        if self.validators.len() < keys.q() {
            return Err(CheckpointError::TooFewSignatures {
                have: self.validators.len(),
                need: keys.q(),
            });
        }
        Ok(())
    }

    /// The C2SP signed-note text: the body, each validator's signature
    /// line, the consortium's BLS line, then `cosignatures`' lines (those of
    /// genesis witnesses).
    pub fn to_c2sp(&self, keyring: &KeyRing, cosignatures: &[Cosignature]) -> String {
        let keys = keyring.log();
        let origin = &self.checkpoint.origin;
        let mut text = self.checkpoint.note_body();
        text.push('\n');
        for v in &self.validators {
            if let Some(k) = keys.validator_key(v.validator) {
                let mut blob = note::key_id(origin, &[note::ED25519], k).to_vec();
                blob.extend_from_slice(v.signature.as_slice());
                text.push_str(
                    &SignatureLine {
                        name: origin.clone(),
                        blob,
                    }
                    .render(),
                );
            }
        }
        if !self.signature.is_empty() {
            let mut blob = note_key_hash(origin, &keyring.consortium_public_key()).to_vec();
            blob.extend_from_slice(self.signature.as_slice());
            text.push_str(
                &SignatureLine {
                    name: origin.clone(),
                    blob,
                }
                .render(),
            );
        }
        for c in cosignatures {
            if let Some((_, k)) = keys.witnesses().find(|(n, _)| *n == c.witness) {
                text.push_str(&c.line(k).render());
            }
        }
        text
    }

    /// Parses C2SP text: the checkpoint with the validator and consortium
    /// signature lines of genesis's keys, and the cosignatures of genesis's
    /// witnesses. Lines of other keys are ignored, as the signed-note spec
    /// requires; two lines of one key are refused. Nothing is verified
    /// here: call [`Self::verify`] and [`LogKeys::verify_cosignatures`].
    pub fn from_c2sp(text: &str, keyring: &KeyRing) -> Result<(Self, Vec<Cosignature>), CheckpointError> {
        use CheckpointError::Malformed;
        if text.len() > 64 * 1024 {
            return Err(Malformed("note longer than 64 KiB"));
        }
        let (body, lines) = note::split(text).map_err(Malformed)?;
        let checkpoint = parse_body(body)?;
        let keys = keyring.log();
        let origin = keys.origin();
        let bls_id = note_key_hash(origin, &keyring.consortium_public_key());
        let mut signature = None;
        let mut validators = std::collections::BTreeMap::new();
        let mut cosignatures: Vec<Cosignature> = Vec::new();
        let twice = Malformed("two signature lines of one key");
        for line in lines {
            let Some(id) = line.key_id() else { continue };
            let sig = &line.blob[4..];
            if line.name == origin && id == bls_id && sig.len() == 96 {
                if signature.replace(Bytes(sig.to_vec())).is_some() {
                    return Err(twice);
                }
            } else if line.name == origin && id == bls_id {
                return Err(Malformed(
                    "the consortium's line does not hold a 96-byte signature",
                ));
            } else if line.name == origin {
                let found = (0..keys.validators.len()).find(|&v| keys.validators[v].1 == id);
                if found.is_some() && sig.len() != 64 {
                    return Err(Malformed("a validator's line does not hold a 64-byte signature"));
                }
                if let (Some(v), 64) = (found, sig.len()) {
                    let sig = ValidatorSignature {
                        validator: v as u16,
                        signature: Bytes(sig.to_vec()),
                    };
                    if validators.insert(v, sig).is_some() {
                        return Err(twice);
                    }
                }
            } else if let Some((name, _, _)) = keys
                .witnesses
                .iter()
                .find(|(n, _, wid)| *n == line.name && *wid == id)
            {
                if sig.len() != 8 + 64 {
                    return Err(Malformed(
                        "a witness's line does not hold a timestamped 64-byte signature",
                    ));
                }
                {
                    if cosignatures.iter().any(|c| &c.witness == name) {
                        return Err(twice);
                    }
                    let mut time = [0u8; 8];
                    time.copy_from_slice(&sig[..8]);
                    cosignatures.push(Cosignature {
                        witness: name.clone(),
                        time: u64::from_be_bytes(time),
                        signature: Bytes(sig[8..].to_vec()),
                    });
                }
            }
        }
        let signed = SignedCheckpoint {
            checkpoint,
            signature: signature.unwrap_or_default(),
            validators: validators.into_values().collect(),
        };
        Ok((signed, cosignatures))
    }
}

/// Parses a checkpoint note body (with its final newline), refusing any
/// text that is not exactly what [`Checkpoint::note_body`] writes.
pub fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
    use CheckpointError::Malformed;
    let mut lines = body
        .strip_suffix('\n')
        .ok_or(Malformed("body must end in a newline"))?
        .split('\n');
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or(Malformed("missing origin"))?;
    let size_line = lines.next().ok_or(Malformed("missing size"))?;
    if size_line.is_empty()
        || !size_line.bytes().all(|b| b.is_ascii_digit())
        || (size_line.len() > 1 && size_line.starts_with('0'))
    {
        return Err(Malformed("size must be a decimal number without leading zeros"));
    }
    let size: u64 = size_line.parse().map_err(|_| Malformed("size out of range"))?;
    let root_bytes = B64
        .decode(lines.next().ok_or(Malformed("missing root"))?)
        .map_err(|_| Malformed("root is not base64"))?;
    let root: [u8; 32] = root_bytes
        .try_into()
        .map_err(|_| Malformed("root is not 32 bytes"))?;
    let height = extension(lines.next(), "height")?;
    let time = Timestamp(extension(lines.next(), "time")?);
    let index: [u8; 32] = lines
        .next()
        .and_then(|l| l.strip_prefix("index "))
        .and_then(|b| B64.decode(b).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(Malformed("sixth line must be `index <base64 of 32 bytes>`"))?;
    if lines.next().is_some() {
        return Err(Malformed("unexpected extension lines"));
    }
    let checkpoint = Checkpoint {
        version: Checkpoint::VERSION,
        origin: origin.to_string(),
        size,
        root: Digest(root),
        height,
        time,
        index: Digest(index),
    };
    checkpoint.check().map_err(|_| Malformed("invalid origin"))?;
    if checkpoint.note_body() != body {
        return Err(Malformed("body is not in canonical form"));
    }
    Ok(checkpoint)
}
