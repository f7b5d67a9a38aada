//! Checkpoints: (log origin, size, root, height, time) signed by the
//! consortium's threshold key, and their C2SP `tlog-checkpoint` signed-note
//! text.
//!
//! The note body is
//!
//! ```text
//! <origin>\n<size>\n<base64 root>\nheight <height>\ntime <unix ms>\nindex <base64 index root>\n
//! ```
//!
//! (`height`, `time` and `index` are checkpoint extension lines; `index` is
//! the root of the authenticated index of sources and campaigns at
//! `size`, [`crate::index`]) and the consortium
//! signature covers the domain-tagged body bytes. The signature line is
//! `— <key name> <base64(key hash || signature)>`, where the key hash is the
//! first four bytes of SHA-256(key name || "\n" || 0xff ||
//! "govtune-bls12381-threshold" || group public key): 0xff is the signed-note
//! type byte for algorithms without an assigned byte, followed by our
//! algorithm's name.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::codec::{limit, Canonical, DecodeError};
use crate::crypto::{signing_message, KeyRing, SigningDomain};
use crate::digest::{Bytes, Digest, ObjectKind};
use crate::Timestamp;

const ALGORITHM: &[u8] = b"govtune-bls12381-threshold";

/// A log state at a consensus height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u16,
    /// Log origin (the consortium name).
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
    /// 4: `index` added.
    const VERSION: u16 = 4;
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
    /// No signature line by the consortium key.
    #[error("no signature line by key {0:?}")]
    NoSignature(String),
    /// The consortium signature does not verify.
    #[error("consortium signature does not verify")]
    BadSignature,
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

/// A checkpoint with its consortium signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Combined consortium BLS signature (96 bytes).
    pub signature: Bytes,
}

impl Canonical for SignedCheckpoint {
    const KIND: ObjectKind = ObjectKind::Checkpoint;
    const VERSION: u16 = 4;
    fn declared_version(&self) -> u16 {
        self.checkpoint.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        self.checkpoint.check()?;
        limit(Self::KIND, "signature", self.signature.len(), 96)
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

/// The signed-note key hash of the consortium key.
pub fn note_key_hash(key_name: &str, group_key: &[u8; 48]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(key_name.as_bytes());
    h.update(b"\n");
    h.update([0xff]);
    h.update(ALGORITHM);
    h.update(group_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl SignedCheckpoint {
    /// Verifies the consortium signature with the key ring from genesis.
    pub fn verify(&self, keyring: &KeyRing) -> Result<(), CheckpointError> {
        if keyring.verify_consortium(&self.checkpoint.signing_message(), self.signature.as_slice()) {
            Ok(())
        } else {
            Err(CheckpointError::BadSignature)
        }
    }

    /// The C2SP signed-note text, signed by key `key_name`.
    pub fn to_c2sp(&self, key_name: &str, group_key: &[u8; 48]) -> String {
        let mut blob = note_key_hash(key_name, group_key).to_vec();
        blob.extend_from_slice(self.signature.as_slice());
        format!(
            "{}\n\u{2014} {} {}\n",
            self.checkpoint.note_body(),
            key_name,
            B64.encode(blob)
        )
    }

    /// Parses C2SP text, taking the signature line of `key_name` (other
    /// signature lines are ignored, as the signed-note spec requires). The
    /// signature is not verified here: call [`Self::verify`].
    pub fn from_c2sp(text: &str, key_name: &str, group_key: &[u8; 48]) -> Result<Self, CheckpointError> {
        use CheckpointError::Malformed;
        if text.len() > 64 * 1024 {
            return Err(Malformed("note longer than 64 KiB"));
        }
        let split = text
            .find("\n\n")
            .ok_or(Malformed("no blank line before signatures"))?;
        let (body, sigs) = (&text[..split + 1], &text[split + 2..]);
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
        let want_hash = note_key_hash(key_name, group_key);
        for line in sigs.split_terminator('\n') {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or(Malformed("signature lines start with an em dash and a space"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(Malformed("signature line needs a name and a signature"))?;
            if name != key_name {
                continue;
            }
            let blob = B64
                .decode(b64)
                .map_err(|_| Malformed("signature is not base64"))?;
            if blob.len() != 4 + 96 || blob[..4] != want_hash {
                continue;
            }
            return Ok(SignedCheckpoint {
                checkpoint,
                signature: Bytes(blob[4..].to_vec()),
            });
        }
        Err(CheckpointError::NoSignature(key_name.to_string()))
    }
}
