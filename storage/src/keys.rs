//! Column families and key encodings. Integers are big-endian so RocksDB's
//! byte order is numeric order.

use provenance::Digest;

/// Metadata: the head, the safety state, the latest checkpoint.
pub const CF_META: &str = "meta";
/// Height → [`crate::BlockRecord`] (header, certificate, first log index).
pub const CF_BLOCKS: &str = "blocks";
/// Log index → the entry's canonical bytes (the Merkle leaf input).
pub const CF_ENTRIES: &str = "entries";
/// Entry body digest → log index.
pub const CF_BY_DIGEST: &str = "by_digest";
/// (level, index) → hash of that perfect subtree of the log.
pub const CF_TREE: &str = "tree";
/// Height → signed checkpoint.
pub const CF_CHECKPOINTS: &str = "checkpoints";
/// Content digest → blob bytes.
pub const CF_BLOBS: &str = "blobs";
/// Index key (kind, key, log index) → nothing.
pub const CF_INDEX: &str = "index";
/// State key → state record.
pub const CF_STATE: &str = "state";
/// Entry body digest → an entry this node accepted for co-signing and has
/// not yet seen committed (removed in the batch that commits it).
pub const CF_PENDING: &str = "pending";

/// The authenticated index of sources and campaigns (`crate::authindex`).
pub const CF_AUTHINDEX: &str = "authindex";

/// Witnesses' cosignatures of checkpoints, by height.
pub const CF_COSIGNATURES: &str = "cosignatures";

/// Every column family.
pub const ALL_CFS: [&str; 12] = [
    CF_META,
    CF_BLOCKS,
    CF_ENTRIES,
    CF_BY_DIGEST,
    CF_TREE,
    CF_CHECKPOINTS,
    CF_BLOBS,
    CF_INDEX,
    CF_STATE,
    CF_PENDING,
    CF_AUTHINDEX,
    CF_COSIGNATURES,
];

/// Meta key of the store head.
pub const META_HEAD: &[u8] = b"head";
/// Meta key of the consensus safety state.
pub const META_SAFETY: &[u8] = b"safety";
/// Prefix of consensus blocks learned but not final yet (`prefix ‖ digest`).
pub const META_UNFINALIZED: &[u8] = b"unfinalized/";
/// Meta key of the latest checkpoint's height.
pub const META_LATEST_CHECKPOINT: &[u8] = b"latest-checkpoint";
/// Meta key of the height of the latest checkpoint with the cosignatures
/// genesis requires.
pub const META_LATEST_WITNESSED: &[u8] = b"latest-witnessed";
/// Meta key of the store's format ([`STORE_FORMAT`]).
pub const META_FORMAT: &[u8] = b"format";
/// The store's format: the log's tree is RFC 6962 over SHA-256. A store
/// without it (its tree hashed with SHA3-256) is refused, never rehashed.
pub const STORE_FORMAT: &[u8] =
    b"govtune-store/v6 log=rfc6962-sha256 entry=v3 index=smt-sha256 checkpoint=v5";

/// A u64 key.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Parses a u64 key.
pub fn parse_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// A tree node key: level then index.
pub fn tree_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level as u8;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The kinds of secondary index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndexKind {
    /// Entries of a campaign.
    Campaign = 1,
    /// Entries touching a source.
    Source = 2,
    /// Entries touching one example (source, index).
    Example = 3,
    /// Entries an authority signed (or must sign).
    Authority = 4,
    /// Entries that changed a parameter block.
    ParameterBlock = 5,
}

/// An index key without its log index: what a query scans by prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexPrefix(pub Vec<u8>);

impl IndexPrefix {
    /// Entries of campaign `c`.
    pub fn campaign(c: &Digest) -> Self {
        Self([&[IndexKind::Campaign as u8][..], &c.0].concat())
    }
    /// Entries touching source `s`.
    pub fn source(s: &Digest) -> Self {
        Self([&[IndexKind::Source as u8][..], &s.0].concat())
    }
    /// Entries touching example `index` of source `s`.
    pub fn example(s: &Digest, index: u64) -> Self {
        Self([&[IndexKind::Example as u8][..], &s.0, &index.to_be_bytes()].concat())
    }
    /// Entries authority `a` signs.
    pub fn authority(a: &str) -> Self {
        Self([&[IndexKind::Authority as u8, a.len() as u8][..], a.as_bytes()].concat())
    }
    /// Entries that changed parameter block `b`.
    pub fn parameter_block(b: u32) -> Self {
        Self([&[IndexKind::ParameterBlock as u8][..], &b.to_be_bytes()].concat())
    }
    /// The authenticated index's key for this prefix, if it is a source's
    /// or a campaign's.
    pub fn authenticated(&self) -> Option<provenance::index::IndexKey> {
        use provenance::index::IndexKey;
        let id = Digest(self.0.get(1..33)?.try_into().ok()?);
        match (self.0.first(), self.0.len()) {
            (Some(k), 33) if *k == IndexKind::Source as u8 => Some(IndexKey::Source(id)),
            (Some(k), 33) if *k == IndexKind::Campaign as u8 => Some(IndexKey::Campaign(id)),
            _ => None,
        }
    }
    /// The full key for one log index.
    pub fn with_index(&self, log_index: u64) -> Vec<u8> {
        [&self.0[..], &log_index.to_be_bytes()].concat()
    }
}
