//! Content addressing: SHA3-256 with a distinct domain tag per object kind,
//! and the byte newtypes that print as hex in JSON.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest as _, Sha3_256};

/// The kinds of object (and of hashed structure) govtune addresses. Each has
/// its own domain tag, so bytes valid as one kind never hash to the address
/// of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// [`crate::DataSourceManifest`].
    Manifest,
    /// One salted example of a source (a leaf of the manifest's tree).
    Example,
    /// [`crate::PolicyArtifact`].
    Policy,
    /// [`crate::Campaign`].
    Campaign,
    /// [`crate::CampaignClose`].
    CampaignClose,
    /// [`crate::StepEvent`].
    StepEvent,
    /// [`crate::CompositeEvent`].
    CompositeEvent,
    /// [`crate::Refusal`].
    Refusal,
    /// [`crate::RefusalAggregate`].
    RefusalAggregate,
    /// [`crate::Revocation`].
    Revocation,
    /// [`crate::Checkpoint`].
    Checkpoint,
    /// [`crate::LedgerEntry`], the log's leaf.
    LedgerEntry,
    /// [`crate::Genesis`].
    Genesis,
    /// One authority's section of an event.
    Section,
    /// A public key, for key identifiers.
    PublicKey,
    /// A model or optimizer state, parameter block or blob.
    Blob,
    /// [`crate::block::BlockHeader`].
    Block,
    /// [`crate::audit::AuditFailure`].
    AuditFailure,
}

impl ObjectKind {
    /// Human name, used in errors.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Manifest => "DataSourceManifest",
            Self::Example => "Example",
            Self::Policy => "PolicyArtifact",
            Self::Campaign => "Campaign",
            Self::CampaignClose => "CampaignClose",
            Self::StepEvent => "StepEvent",
            Self::CompositeEvent => "CompositeEvent",
            Self::Refusal => "Refusal",
            Self::RefusalAggregate => "RefusalAggregate",
            Self::Revocation => "Revocation",
            Self::Checkpoint => "Checkpoint",
            Self::LedgerEntry => "LedgerEntry",
            Self::Genesis => "Genesis",
            Self::Section => "Section",
            Self::PublicKey => "PublicKey",
            Self::Blob => "Blob",
            Self::Block => "BlockHeader",
            Self::AuditFailure => "AuditFailure",
        }
    }

    /// The domain tag hashed before the object's bytes.
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Self::Manifest => b"govtune/v1/manifest",
            Self::Example => b"govtune/v1/example",
            Self::Policy => b"govtune/v1/policy",
            Self::Campaign => b"govtune/v1/campaign",
            Self::CampaignClose => b"govtune/v1/campaign-close",
            Self::StepEvent => b"govtune/v1/step-event",
            Self::CompositeEvent => b"govtune/v1/composite-event",
            Self::Refusal => b"govtune/v1/refusal",
            Self::RefusalAggregate => b"govtune/v1/refusal-aggregate",
            Self::Revocation => b"govtune/v1/revocation",
            Self::Checkpoint => b"govtune/v1/checkpoint",
            Self::LedgerEntry => b"govtune/v1/ledger-entry",
            Self::Genesis => b"govtune/v1/genesis",
            Self::Section => b"govtune/v1/section",
            Self::PublicKey => b"govtune/v1/public-key",
            Self::Blob => b"govtune/v1/blob",
            Self::Block => b"govtune/v1/block",
            Self::AuditFailure => b"govtune/v1/audit-failure",
        }
    }
}

/// SHA3-256 over `len(tag) || tag || data`: the content address of `data`
/// as an object of `kind`.
pub fn tagged_hash(kind: ObjectKind, data: &[u8]) -> Digest {
    tagged_hash_parts(kind, &[data])
}

/// [`tagged_hash`] over the concatenation of several parts.
pub fn tagged_hash_parts(kind: ObjectKind, parts: &[&[u8]]) -> Digest {
    let tag = kind.tag();
    let mut h = Sha3_256::new();
    h.update([tag.len() as u8]);
    h.update(tag);
    for p in parts {
        h.update(p);
    }
    Digest(h.finalize().into())
}

/// A 32-byte SHA3-256 digest. Hex in JSON, raw bytes in the canonical
/// encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest, used as "no previous entry".
    pub const ZERO: Digest = Digest([0u8; 32]);

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Digest(out))
    }

    /// The first eight hex characters, for logs and messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Digest::from_hex(&s).map_err(de::Error::custom)
        } else {
            Ok(Digest(<[u8; 32]>::deserialize(d)?))
        }
    }
}

/// Variable-length bytes (keys, signatures). Hex in JSON, length-prefixed
/// raw bytes in the canonical encoding.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes(v.to_vec())
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(8)];
        write!(f, "Bytes({}…, {} bytes)", hex::encode(shown), self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes or a hex string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                hex::decode(v).map(Bytes).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_byte_buf(V)
        }
    }
}
