//! The node's HTTP API (`/v1`) as serde types: the one schema the server
//! writes and every client reads. The JSON shapes are documented in
//! `docs/api.md`.

pub mod trace;

pub use trace::{
    BaseLineage, CitedEntry, TraceAnswer, TraceRequest, TracedBlock, TracedEvent, TracedExample, TracedSource,
};
