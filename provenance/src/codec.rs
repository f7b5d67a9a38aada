//! The one canonical binary encoding of every govtune object.
//!
//! Every object is encoded with bincode 2 under one fixed configuration:
//! big-endian, fixed-width integers, and a hard limit of [`MAX_OBJECT_BYTES`]
//! so that no length prefix can make a decoder allocate more than the input
//! could hold. Every canonical type is a struct whose first field is a
//! `version: u16`; [`decode`] reads that version before anything else, so an
//! object from a newer format is refused with [`DecodeError::UnsupportedVersion`]
//! rather than misread.
//!
//! Decoding is strict: truncated input, trailing bytes, an unknown version, a
//! field over its limit (see each type's [`Canonical::check`]) or any malformed
//! value is a typed error. Decoders never panic on arbitrary bytes (the
//! `fuzz/` targets check this).

use serde::{de::DeserializeOwned, Serialize};

use crate::digest::{tagged_hash, Digest, ObjectKind};

/// Largest encoded object a decoder accepts (16 MiB).
pub const MAX_OBJECT_BYTES: usize = 16 * 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_OBJECT_BYTES>,
>;

const CONFIG: Config = bincode::config::standard()
    .with_big_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_OBJECT_BYTES>();

/// Why bytes could not be decoded into an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the object did.
    #[error("{kind}: input is truncated")]
    Truncated {
        /// Object kind being decoded.
        kind: &'static str,
    },
    /// The object ended before the input did.
    #[error("{kind}: {extra} trailing bytes after the object")]
    TrailingBytes {
        /// Object kind being decoded.
        kind: &'static str,
        /// Number of unread bytes.
        extra: usize,
    },
    /// The object declares a format version this build does not read.
    #[error("{kind}: format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// Object kind being decoded.
        kind: &'static str,
        /// Version found in the input.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// A field is longer than its limit.
    #[error("{kind}: field `{field}` has length {len}, over its limit of {max}")]
    Oversized {
        /// Object kind being decoded.
        kind: &'static str,
        /// Field name.
        field: &'static str,
        /// Length found.
        len: usize,
        /// Limit for this field.
        max: usize,
    },
    /// The whole input is larger than [`MAX_OBJECT_BYTES`], or a length
    /// prefix claims more than that.
    #[error("{kind}: object exceeds the {max}-byte limit")]
    TooLarge {
        /// Object kind being decoded.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// A value is not a valid encoding (bad enum tag, bad UTF-8, ...).
    #[error("{kind}: malformed encoding: {reason}")]
    Malformed {
        /// Object kind being decoded.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The encoding is well-formed but a field breaks a rule of the format.
    #[error("{kind}: invalid field `{field}`: {reason}")]
    Invalid {
        /// Object kind being decoded.
        kind: &'static str,
        /// Field name.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// A type with a canonical encoding, a format version and a content address.
pub trait Canonical: Serialize + DeserializeOwned {
    /// The kind of object, which names its hashing domain.
    const KIND: ObjectKind;
    /// The format version this build writes and reads.
    const VERSION: u16;

    /// The version the value itself declares (its `version` field).
    fn declared_version(&self) -> u16;

    /// Checks field limits and nested versions; called by [`decode`] after
    /// the bytes parsed, and by [`Canonical::encode`] callers that build
    /// objects from untrusted parts.
    fn check(&self) -> Result<(), DecodeError>;

    /// The canonical bytes of this object.
    fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// The content address: SHA3-256 over the kind's domain tag and the
    /// canonical bytes.
    fn digest(&self) -> Digest {
        tagged_hash(Self::KIND, &self.encode())
    }
}

/// Encodes any serialisable value with the canonical configuration.
///
/// Encoding does not enforce [`MAX_OBJECT_BYTES`] (bincode checks its limit
/// only when reading), so it cannot fail for govtune's types (no maps with
/// non-string keys, no sequences of unknown length); an object built over
/// the limit encodes, and every decoder refuses it as
/// [`DecodeError::TooLarge`]. The `panic!` below is reached only by a type
/// serde cannot encode at all, a programming error.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match bincode::serde::encode_to_vec(value, CONFIG) {
        Ok(bytes) => bytes,
        Err(e) => panic!("canonical encoding failed (object too large or unsupported type): {e}"),
    }
}

/// Decodes a canonical object, rejecting truncated, trailing, oversized,
/// wrong-version and malformed input.
pub fn decode<T: Canonical>(bytes: &[u8]) -> Result<T, DecodeError> {
    let kind = T::KIND.name();
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(DecodeError::TooLarge {
            kind,
            max: MAX_OBJECT_BYTES,
        });
    }
    if bytes.len() < 2 {
        return Err(DecodeError::Truncated { kind });
    }
    let found = u16::from_be_bytes([bytes[0], bytes[1]]);
    if found != T::VERSION {
        return Err(DecodeError::UnsupportedVersion {
            kind,
            found,
            supported: T::VERSION,
        });
    }
    let (value, read): (T, usize) = decode_raw(kind, bytes)?;
    if read != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            kind,
            extra: bytes.len() - read,
        });
    }
    value.check()?;
    Ok(value)
}

/// Decodes a value that is not itself a [`Canonical`] object (for example a
/// wire message), returning it and the number of bytes read.
pub fn decode_raw<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    use bincode::error::DecodeError as E;
    bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|e| match e {
        E::UnexpectedEnd { .. } => DecodeError::Truncated { kind },
        E::LimitExceeded => DecodeError::TooLarge {
            kind,
            max: MAX_OBJECT_BYTES,
        },
        other => DecodeError::Malformed {
            kind,
            reason: other.to_string(),
        },
    })
}

/// Checks that a collection or string is within its limit.
pub fn limit(kind: ObjectKind, field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        Err(DecodeError::Oversized {
            kind: kind.name(),
            field,
            len,
            max,
        })
    } else {
        Ok(())
    }
}

/// Checks a nested object's declared version.
pub fn nested_version<T: Canonical>(value: &T) -> Result<(), DecodeError> {
    if value.declared_version() != T::VERSION {
        return Err(DecodeError::UnsupportedVersion {
            kind: T::KIND.name(),
            found: value.declared_version(),
            supported: T::VERSION,
        });
    }
    value.check()
}

/// Checks that a float is finite (NaN and infinities have no place in a
/// measurement and would not survive JSON).
pub fn finite(kind: ObjectKind, field: &'static str, value: f32) -> Result<(), DecodeError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            kind: kind.name(),
            field,
            reason: format!("{value} is not a finite number"),
        })
    }
}
