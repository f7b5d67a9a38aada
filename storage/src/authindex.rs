//! The authenticated index ([`provenance::index`]) kept in the store: the
//! tree's nodes by version, so that a proof at any checkpoint's size is
//! read, never rebuilt, and each key's pages of positions.
//!
//! Rows of `authindex` (integers big-endian):
//!
//! * `n ‖ node id (34 bytes) ‖ version` → the node as the block that ended
//!   at log size `version` left it. A node is never removed (keys are never
//!   removed), only replaced, so the node at size N is the row of the
//!   largest version at or below N.
//! * `t ‖ path` → the key's [`Tail`]: its count, the right edge of its full
//!   pages' tree, and the positions of its last, unfilled page.
//! * `p ‖ path ‖ page` → a full page's positions (2,048 bytes), and
//!   `h ‖ path ‖ page` → its leaf hash.
//!
//! A block's additions rewrite only the nodes on its keys' paths and their
//! tails, in the block's one batch.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use provenance::index::nodes::{self, Node, NodeId, NodeStore};
use provenance::index::{page_bytes, page_count, IndexKey, IndexProof, IndexValue, PAGE};
use provenance::merkle::{MemoryTree, Sha256Hasher, TreeHasher};
use provenance::Digest;
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::frontier::Frontier;
use crate::{digest_from, read_record, record, Result, StoreError};

const NODE: u8 = b'n';
const TAIL: u8 = b't';
const PAGE_POSITIONS: u8 = b'p';
const PAGE_HASH: u8 = b'h';

/// What a key's list needs to grow: how many entries name it, the right
/// edge of the tree over its full pages, and its last page's positions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tail {
    count: u64,
    full: Vec<Option<Digest>>,
    last: Vec<u64>,
}

impl Tail {
    fn full_pages(&self) -> u64 {
        self.count / PAGE as u64
    }

    /// The RFC 6962 root over the key's pages.
    fn pages_root(&self) -> Result<Digest> {
        let mut f = Frontier(self.full.clone());
        if !self.last.is_empty() {
            f.push(
                self.full_pages(),
                Sha256Hasher::hash_leaf(&page_bytes(&self.last)),
            )?;
        }
        Ok(f.root())
    }
}

fn key_of(kind: u8, path: &Digest) -> Vec<u8> {
    [&[kind][..], &path.0].concat()
}

fn page_key(kind: u8, path: &Digest, page: u64) -> Vec<u8> {
    [&[kind][..], &path.0, &page.to_be_bytes()].concat()
}

fn node_key(id: &NodeId, version: u64) -> Vec<u8> {
    [&[NODE][..], &id.key(), &version.to_be_bytes()].concat()
}

fn encode_node(n: &Node) -> Vec<u8> {
    match n {
        Node::Internal { left, right } => [&[0u8][..], &left.0, &right.0].concat(),
        Node::Leaf { path, value } => {
            [&[1u8][..], &path.0, &value.count.to_be_bytes(), &value.pages.0].concat()
        }
    }
}

fn decode_node(b: &[u8]) -> Result<Node> {
    let corrupt = || StoreError::Corrupt(format!("index node of {} bytes", b.len()));
    match (b.first(), b.len()) {
        (Some(0), 65) => Ok(Node::Internal {
            left: digest_from("index node", &b[1..33])?,
            right: digest_from("index node", &b[33..65])?,
        }),
        (Some(1), 73) => Ok(Node::Leaf {
            path: digest_from("index leaf", &b[1..33])?,
            value: IndexValue {
                count: u64::from_be_bytes(b[33..41].try_into().map_err(|_| corrupt())?),
                pages: digest_from("index leaf", &b[41..73])?,
            },
        }),
        _ => Err(corrupt()),
    }
}

fn read_node(db: &DB, cf: &ColumnFamily, id: &NodeId, at: u64) -> Result<Option<Node>> {
    let key = node_key(id, at);
    let mut it = db.iterator_cf(cf, IteratorMode::From(&key, Direction::Reverse));
    match it.next() {
        None => Ok(None),
        Some(r) => {
            let (k, v) = r?;
            if k.len() == key.len() && k[..35] == key[..35] {
                Ok(Some(decode_node(&v)?))
            } else {
                Ok(None)
            }
        }
    }
}

/// The tree as of log size `at`, with the nodes a block writes on top.
struct Nodes<'a> {
    db: &'a DB,
    cf: &'a ColumnFamily,
    at: u64,
    written: HashMap<NodeId, Node>,
    fault: RefCell<Option<StoreError>>,
}

impl<'a> Nodes<'a> {
    fn at(db: &'a DB, cf: &'a ColumnFamily, at: u64) -> Self {
        Self {
            db,
            cf,
            at,
            written: HashMap::new(),
            fault: RefCell::new(None),
        }
    }

    fn check(&self) -> Result<()> {
        match self.fault.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl NodeStore for Nodes<'_> {
    fn node(&self, id: &NodeId) -> Option<Node> {
        if let Some(n) = self.written.get(id) {
            return Some(*n);
        }
        match read_node(self.db, self.cf, id, self.at) {
            Ok(n) => n,
            Err(e) => {
                self.fault.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn put_node(&mut self, id: NodeId, node: Node) {
        self.written.insert(id, node);
    }
}

fn tail(db: &DB, cf: &ColumnFamily, path: &Digest) -> Result<Tail> {
    match db.get_cf(cf, key_of(TAIL, path))? {
        Some(b) => read_record("index tail", &b),
        None => Ok(Tail::default()),
    }
}

/// Adds one block's positions (each key's ascending, after its earlier
/// ones) into `batch`, the block ending at log size `version`; returns the
/// index root after it.
pub(crate) fn append(
    db: &DB,
    cf: &ColumnFamily,
    batch: &mut WriteBatch,
    additions: &BTreeMap<IndexKey, Vec<u64>>,
    version: u64,
) -> Result<Digest> {
    let mut tree = Nodes::at(db, cf, u64::MAX);
    for (key, positions) in additions {
        let path = key.path();
        let mut t = tail(db, cf, &path)?;
        for &p in positions {
            t.last.push(p);
            t.count += 1;
            if t.last.len() == PAGE {
                let page = t.full_pages() - 1;
                let bytes = page_bytes(&t.last);
                let hash = Sha256Hasher::hash_leaf(&bytes);
                batch.put_cf(cf, page_key(PAGE_POSITIONS, &path, page), bytes);
                batch.put_cf(cf, page_key(PAGE_HASH, &path, page), hash.0);
                let mut f = Frontier(std::mem::take(&mut t.full));
                f.push(page, hash)?;
                t.full = f.0;
                t.last.clear();
            }
        }
        let value = IndexValue {
            count: t.count,
            pages: t.pages_root()?,
        };
        batch.put_cf(cf, key_of(TAIL, &path), record(&t));
        nodes::set(&mut tree, &path, value);
        tree.check()?;
    }
    let root = nodes::root(&tree);
    tree.check()?;
    for (id, n) in &tree.written {
        batch.put_cf(cf, node_key(id, version), encode_node(n));
    }
    Ok(root)
}

/// The index root over the log's first `size` entries (`size` a block
/// boundary).
pub(crate) fn root_at(db: &DB, cf: &ColumnFamily, size: u64) -> Result<Digest> {
    let tree = Nodes::at(db, cf, size);
    let root = nodes::root(&tree);
    tree.check()?;
    Ok(root)
}

/// The proof of `key`'s value or absence over the first `size` entries.
pub(crate) fn prove(db: &DB, cf: &ColumnFamily, key: &IndexKey, size: u64) -> Result<IndexProof> {
    let tree = Nodes::at(db, cf, size);
    let proof = nodes::prove(&tree, &key.path());
    tree.check()?;
    Ok(proof)
}

/// Page `page` of `key`'s positions as `value` (its value at some size)
/// counts them, and its inclusion proof under `value.pages`.
pub(crate) fn page(
    db: &DB,
    cf: &ColumnFamily,
    key: &IndexKey,
    value: &IndexValue,
    page: u64,
) -> Result<Option<(Vec<u64>, Vec<Digest>)>> {
    let pages = page_count(value.count);
    if page >= pages {
        return Ok(None);
    }
    let path = key.path();
    let latest = tail(db, cf, &path)?;
    // Page `j`'s positions as they stand now; `value` may count fewer.
    let positions_of = |j: u64| -> Result<Vec<u64>> {
        let mut list = match db.get_cf(cf, page_key(PAGE_POSITIONS, &path, j))? {
            Some(b) if b.len() == PAGE * 8 => b
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            Some(b) => return Err(StoreError::Corrupt(format!("index page of {} bytes", b.len()))),
            None if j == latest.full_pages() => latest.last.clone(),
            None => {
                return Err(StoreError::Corrupt(format!(
                    "index page {j} of {path} is missing"
                )))
            }
        };
        list.truncate(value.count.saturating_sub(j * PAGE as u64).min(PAGE as u64) as usize);
        Ok(list)
    };
    let mut tree = MemoryTree::<Sha256Hasher>::new();
    for j in 0..pages - 1 {
        let h = db
            .get_cf(cf, page_key(PAGE_HASH, &path, j))?
            .ok_or_else(|| StoreError::Corrupt(format!("index page hash {j} of {path} is missing")))?;
        tree.push_leaf_hash(digest_from("index page hash", &h)?);
    }
    let last = positions_of(pages - 1)?;
    tree.push_leaf_hash(Sha256Hasher::hash_leaf(&page_bytes(&last)));
    if tree.root() != value.pages {
        return Err(StoreError::Corrupt(format!(
            "the pages of {path} do not hash to the index's value"
        )));
    }
    let proof = tree
        .inclusion_proof(page, pages)
        .ok_or_else(|| StoreError::Corrupt(format!("no proof of page {page} of {pages}")))?;
    let positions = if page == pages - 1 {
        last
    } else {
        positions_of(page)?
    };
    Ok(Some((positions, proof)))
}
