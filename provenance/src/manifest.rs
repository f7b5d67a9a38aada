//! Data sources: how a text is cut into examples, the salted example hashes
//! and their Merkle tree, and the signed manifest that declares license,
//! rights basis, purposes, data class and validity window.
//!
//! Only salted example hashes reach the log. The salt is a 32-byte secret the
//! rights-holder shares with the operator; without it the log reveals
//! nothing about the text, even of a public-domain play.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::codec::{limit, Canonical, DecodeError};
use crate::digest::{tagged_hash_parts, Digest, ObjectKind};
use crate::ids::{AuthorityId, DataClass, License, Purpose, Timestamp};
use crate::merkle::{verify_inclusion, InclusionProof, MemoryTree, ProofError, Sha3Hasher, TreeHasher};

/// Most explicit boundaries a manifest may list.
pub const MAX_BOUNDARIES: usize = 1 << 20;

/// How a source's bytes are cut into examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Segmentation {
    /// Fixed windows of `length` bytes every `stride` bytes, starting at 0;
    /// a final partial window is dropped.
    Window {
        /// Window length in bytes.
        length: u32,
        /// Distance between window starts.
        stride: u32,
    },
    /// Explicit, strictly increasing byte offsets; example `i` is
    /// `[offsets[i], offsets[i + 1])`.
    Boundaries {
        /// The offsets, first at least 0, last at most the text length.
        offsets: Vec<u64>,
    },
}

/// Why a text could not be cut or checked against a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentationError {
    /// Window length or stride is zero.
    #[error("window length and stride must be positive")]
    ZeroWindow,
    /// Boundaries are not strictly increasing or run past the text.
    #[error("boundaries must be strictly increasing and within the text ({len} bytes)")]
    BadBoundaries {
        /// Text length.
        len: u64,
    },
    /// The text yields no example.
    #[error("the text yields no example")]
    Empty,
}

impl Segmentation {
    /// The byte ranges of the examples of a text of `len` bytes.
    pub fn cut(&self, len: u64) -> Result<Vec<Range<u64>>, SegmentationError> {
        let out: Vec<Range<u64>> = match self {
            Segmentation::Window { length, stride } => {
                if *length == 0 || *stride == 0 {
                    return Err(SegmentationError::ZeroWindow);
                }
                let (l, s) = (u64::from(*length), u64::from(*stride));
                (0..)
                    .map(|i| i * s)
                    .take_while(|start| start + l <= len)
                    .map(|start| start..start + l)
                    .collect()
            }
            Segmentation::Boundaries { offsets } => {
                if offsets.windows(2).any(|w| w[0] >= w[1]) || offsets.last().is_some_and(|&e| e > len) {
                    return Err(SegmentationError::BadBoundaries { len });
                }
                offsets.windows(2).map(|w| w[0]..w[1]).collect()
            }
        };
        if out.is_empty() {
            return Err(SegmentationError::Empty);
        }
        Ok(out)
    }
}

/// On what basis the authority may license the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RightsBasis {
    /// The authority owns the rights.
    Owner,
    /// The authority holds a licence with the right to sublicense.
    Licensee,
    /// The work is in the public domain.
    PublicDomain,
    /// The data subjects consented.
    Consent,
    /// A statutory exception (e.g. text and data mining).
    Statutory,
}

/// A signed declaration of a data source: how it is cut, the root of its
/// salted examples, and the terms under which it may be used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSourceManifest {
    /// Format version.
    pub version: u16,
    /// The data-source authority that signs it.
    pub authority: AuthorityId,
    /// Human title of the source.
    pub title: String,
    /// How the text is cut into examples.
    pub segmentation: Segmentation,
    /// RFC 9162 root over the salted example hashes.
    pub example_root: Digest,
    /// Number of examples.
    pub example_count: u64,
    /// Length of the text in bytes.
    pub content_bytes: u64,
    /// SPDX license.
    pub license: License,
    /// Rights basis.
    pub rights_basis: RightsBasis,
    /// Purposes the source may be used for.
    pub purposes: Vec<Purpose>,
    /// Data class (the policy maps it to a depth profile).
    pub data_class: DataClass,
    /// Start of the validity window (inclusive).
    pub not_before: Timestamp,
    /// End of the validity window (exclusive).
    pub not_after: Timestamp,
}

impl Canonical for DataSourceManifest {
    const KIND: ObjectKind = ObjectKind::Manifest;
    const VERSION: u16 = 1;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        limit(k, "title", self.title.len(), 256)?;
        limit(k, "purposes", self.purposes.len(), 64)?;
        if let Segmentation::Boundaries { offsets } = &self.segmentation {
            limit(k, "segmentation.offsets", offsets.len(), MAX_BOUNDARIES)?;
        }
        let invalid = |field, reason: String| DecodeError::Invalid {
            kind: k.name(),
            field,
            reason,
        };
        self.authority
            .validate()
            .map_err(|e| invalid("authority", e.to_string()))?;
        self.license
            .validate()
            .map_err(|e| invalid("license", e.to_string()))?;
        self.data_class
            .validate()
            .map_err(|e| invalid("data_class", e.to_string()))?;
        for p in &self.purposes {
            p.validate().map_err(|e| invalid("purposes", e.to_string()))?;
        }
        if self.not_after <= self.not_before {
            return Err(invalid("not_after", "validity window is empty".into()));
        }
        Ok(())
    }
}

impl DataSourceManifest {
    /// The source's identifier: the manifest's digest.
    pub fn source_id(&self) -> Digest {
        self.digest()
    }

    /// Verifies that `example_hash` is example `index` of this source.
    pub fn verify_example(
        &self,
        index: u64,
        example_hash: &Digest,
        path: &[Digest],
    ) -> Result<(), ProofError> {
        verify_inclusion::<Sha3Hasher>(
            index,
            self.example_count,
            &Sha3Hasher::hash_leaf(&example_hash.0),
            path,
            &self.example_root,
        )
    }

    /// Whether `time` lies in the validity window.
    pub fn valid_at(&self, time: Timestamp) -> bool {
        self.not_before <= time && time < self.not_after
    }
}

/// The salted hash of example `index` with content `example`.
pub fn example_hash(salt: &[u8; 32], index: u64, example: &[u8]) -> Digest {
    tagged_hash_parts(ObjectKind::Example, &[salt, &index.to_be_bytes(), example])
}

/// A source cut into examples with their salted hashes and tree: what the
/// rights-holder builds to sign a manifest, and the operator to prove
/// examples.
#[derive(Debug, Clone)]
pub struct SourceExamples {
    ranges: Vec<Range<u64>>,
    hashes: Vec<Digest>,
    tree: MemoryTree<Sha3Hasher>,
}

impl SourceExamples {
    /// Cuts `text` and hashes every example under `salt`.
    pub fn build(
        text: &[u8],
        segmentation: &Segmentation,
        salt: &[u8; 32],
    ) -> Result<Self, SegmentationError> {
        let ranges = segmentation.cut(text.len() as u64)?;
        let hashes: Vec<Digest> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| example_hash(salt, i as u64, &text[r.start as usize..r.end as usize]))
            .collect();
        let tree = MemoryTree::from_leaves(hashes.iter().map(|h| h.0.as_slice()));
        Ok(Self { ranges, hashes, tree })
    }

    /// Number of examples.
    pub fn len(&self) -> u64 {
        self.ranges.len() as u64
    }

    /// True when there are no examples (never, once built).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The Merkle root over the example hashes.
    pub fn root(&self) -> Digest {
        self.tree.root()
    }

    /// Byte range of example `index`.
    pub fn range(&self, index: u64) -> Option<Range<u64>> {
        self.ranges.get(usize::try_from(index).ok()?).cloned()
    }

    /// Salted hash of example `index`.
    pub fn hash(&self, index: u64) -> Option<Digest> {
        self.hashes.get(usize::try_from(index).ok()?).copied()
    }

    /// Inclusion proof of example `index` in the source's tree.
    pub fn proof(&self, index: u64) -> Option<InclusionProof> {
        let path = self.tree.inclusion_proof(index, self.len())?;
        Some(InclusionProof {
            leaf_index: index,
            tree_size: self.len(),
            path,
        })
    }
}
