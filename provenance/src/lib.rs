//! Formats, hashing, signatures, admission and proof maths of govtune.
//!
//! `provenance` is the trusted core every other part stands on: nodes, the
//! tuner and light clients all decode these formats, check these
//! signatures and verify these proofs. It does no I/O, reads no clock and
//! starts no thread, so it builds fast and tests deterministically.
//!
//! * [`codec`]: the one canonical binary encoding, strict decoding.
//! * [`digest`]: SHA3-256 content addresses with a domain tag per kind.
//! * The objects: [`DataSourceManifest`], [`PolicyArtifact`], [`Campaign`],
//!   [`CampaignClose`], [`StepEvent`], [`CompositeEvent`], [`Refusal`],
//!   [`RefusalAggregate`], [`Revocation`], [`Checkpoint`], each a variant of
//!   the log's leaf [`LedgerEntry`].
//! * [`crypto`]: BLS (threshold, aggregate), Ed25519 and ML-DSA-65 authority
//!   signatures, co-signatures and the [`KeyRing`] built from [`Genesis`].
//! * [`entry`]: who must sign each kind of entry, and the verifier that
//!   names the signature that is missing or bad.
//! * [`admission`]: the deterministic admission evaluator.
//! * [`order`]: a campaign's data order and the accounting of every
//!   position it draws.
//! * [`audit`]: replay-audit tickets, which records they select, and the
//!   check that every selected record was replayed.
//! * [`merkle`]: RFC 9162 trees, inclusion and consistency proofs.
//! * [`checkpoint`]: consortium-signed checkpoints and C2SP note text.
//! * [`note`]: C2SP signed-note lines, verifier keys and cosignatures.
#![deny(missing_docs)]

pub mod admission;
pub mod api;
pub mod audit;
pub mod block;
pub mod campaign;
pub mod chain;
pub mod checkpoint;
pub mod codec;
pub mod crypto;
pub mod digest;
pub mod entry;
pub mod error;
pub mod event;
pub mod genesis;
pub mod ids;
pub mod index;
pub mod manifest;
pub mod merkle;
pub mod note;
pub mod order;
pub mod policy;
pub mod record;
pub mod refusal;
pub mod revocation;
pub mod signers;
pub mod state;

pub use admission::{admit, admit_committed, check_memorisation, Admission, AdmissionContext};
pub use block::BlockHeader;
pub use campaign::{BaseModel, Campaign, CampaignClose, ModelShape, SketchSpec, SourceCount};
pub use chain::EventView;
pub use checkpoint::{
    Checkpoint, CheckpointError, Cosignature, LogKeys, SignedCheckpoint, ValidatorSignature,
};
pub use codec::{decode, Canonical, DecodeError};
pub use crypto::{
    AuthoritySignature, AuthoritySigner, CoSignature, CoSigner, KeyRing, SignatureError, SignatureScheme,
};
pub use digest::{Bytes, Digest, ObjectKind};
pub use entry::{Attestation, EntryBody, EntryError, LedgerEntry, LedgerView, MemoryLedgerView};
pub use error::Error;
pub use event::{
    AdmitDecision, BlockMeasure, ChainLink, CompositeEvent, DepthProfile, ExampleRecord, Measurement,
    MemorisationSignals, RoutingMask, StepEvent,
};
pub use genesis::{ConsortiumParams, Genesis, GenesisError};
pub use ids::{AuthorityId, DataClass, License, Purpose, Role, Timestamp};
pub use manifest::{DataSourceManifest, RightsBasis, Segmentation, SourceExamples};
pub use order::{Accounting, ConsideredSource, Order, OrderFault, OrderSeed, OrderSpan};
pub use policy::{
    DepthResolution, DepthRule, EventGranularity, LogVolume, MemorisationThresholds, PolicyArtifact,
    RoutingGranularity,
};
pub use refusal::{ExampleRef, Refusal, RefusalAggregate, RefusalCount, RefusalReason};
pub use revocation::{EffectiveRevocation, Revocation};
pub use signers::{Section, Signer, Signers, SigningPlan};
pub use state::{LedgerState, StateError, StateKey};
