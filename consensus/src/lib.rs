//! Order blocks of complete step events among n = 3f + 1 validators.
//!
//! `consensus` is a pure state machine driven by its caller, in the shape of
//! tikv/raft-rs: messages and clock ticks go in ([`Engine::handle`],
//! [`Engine::tick`]), [`Action`]s come out (persist the safety state, send a
//! message, a block is final, a peer misbehaved). No sockets, no clock, no
//! threads: the node wires it to libp2p and RocksDB, the simulator
//! ([`sim`], feature `sim`) to a seeded virtual network.
//!
//! # Protocol (Simplex, Chan & Pass 2023, with all-to-all votes)
//!
//! Views 1, 2, … each have a leader, `view mod n`. A validator is in one view
//! at a time and keeps, per view, what it voted ([`SafetyState`]).
//!
//! 1. **Enter view v** (on a notarisation or nullification of v − 1): start
//!    a timer. The leader proposes a block whose parent is the notarised
//!    block of the highest earlier view w such that every view in (w, v) is
//!    nullified (genesis if none); the proposal carries those certificates.
//! 2. **Upon the leader's first proposal for v** that extends such a
//!    justified parent, has height parent + 1, a stamp not below the
//!    parent's and at most `max_skew` ahead of the voter's clock, and whose
//!    payload the application accepts (every event complete and valid):
//!    vote *notarize(v, b)*, unless it already voted nullify in v.
//! 3. **Upon q notarize(v, b)** (a notarisation certificate): forward it; if
//!    in view v and it has not voted nullify in v, vote *finalize(v, b)*;
//!    enter v + 1.
//! 4. **Upon timeout in v**: vote *nullify(v)* unless it voted finalize in v;
//!    on later timeouts re-send its votes and the certificate that opened v.
//! 5. **Upon q nullify(v)**: forward the certificate; enter v + 1.
//! 6. **Upon q finalize(v, b)**: b and its ancestors are final, emitted in
//!    height order. Missing ancestors are fetched by block sync (a
//!    finalisation certificate and the chain of blocks under it, checked
//!    link by link).
//!
//! Every certificate is one combined threshold signature under the
//! consortium key (q = n − f shares, [`BlsThreshold`]); the engine is
//! generic over [`CertificateScheme`] so the simulator can use a fast
//! stand-in for its many seeds. Each incoming share is verified before it is
//! counted (a bad one is dropped and its sender reported); each certificate
//! from a peer is verified before it is used or forwarded.
//!
//! **Persistence.** A vote's [`Action::Persist`] comes before its
//! [`Action::Send`]; the caller must make it durable first. A validator
//! restarted from that state ([`Engine::restore`]) never votes notarize for
//! two blocks in one view, never votes both finalize and nullify in one
//! view, and never proposes twice in one view.
//!
//! **Restarting as a whole.** Votes and certificates name blocks by digest
//! only. If every validator stops at once with a notarised block that no
//! one saw final, the next leader must extend that block, so it must still
//! be known: the application keeps every block it is told of
//! ([`Application::observe`], durable before the engine may vote for it)
//! and hands them back with [`Engine::restore_blocks`]; the safety state
//! carries the certificates since the last finalisation
//! ([`SafetyState::earlier`]) to justify that proposal. The simulator's
//! whole-consortium crash test stalls without either (16 and 2 of 200
//! seeds).
//!
//! # Safety argument
//!
//! Any two sets of q validators share at least 2q − n ≥ f + 1 members, so at
//! least one honest validator.
//!
//! * *One notarised block per view*: two notarisations in view v would need
//!   an honest validator to vote notarize twice in v, which rule 2 and the
//!   persisted safety state forbid.
//! * *A finalised view is never skipped*: finalize(v, b) by q validators
//!   means an honest one voted finalize in v, so it never voted nullify in v
//!   (rules 3, 4); a nullification of v needs q nullify votes and would need
//!   that honest validator's. So no nullification of v exists.
//! * *Every later block extends b*: a proposal in a view after v names a
//!   parent from some view w and nullifications for every view between; v
//!   cannot be skipped, so w ≥ v, and by induction on w every notarised
//!   block of a view ≥ v descends from the only block notarised in v, b.
//!   Honest validators only vote for justified proposals, so only
//!   descendants of b are notarised, hence finalised: finalised chains are
//!   prefixes of one another.
//!
//! *Liveness*: after the network stabilises, a view with an honest leader
//! notarises and finalises its block within a few message delays; a
//! Byzantine or partitioned leader costs one timeout. Lost messages are
//! recovered by re-sending on timeouts.
//!
//! Deviations from the paper: votes are all-to-all and certificates are
//! forwarded once by each validator that learns them (the paper forwards
//! too); timestamps are checked at voting; the finalisation certificate of
//! the tip certifies its ancestors through the hash chain.

mod engine;
mod scheme;
#[cfg(feature = "sim")]
pub mod sim;
mod types;

pub use engine::{sync_chunk, Application, Config, Engine, MAX_SYNC_BLOCKS, MAX_SYNC_SPAN, MAX_VIEWS_AHEAD};
pub use scheme::{BlsThreshold, CertificateScheme};
pub use types::*;
