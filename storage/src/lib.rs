//! Keep a node's durable state: the replicated log, Merkle nodes, proofs,
//! indexes and blobs, in RocksDB.
//!
//! Not built yet (its own issue). The proof maths it will serve from disk is
//! already in `provenance::merkle` behind the `SubtreeSource` trait, which
//! this crate will implement over RocksDB. It exports nothing today.
