//! Fine-tune a small transformer under governance: admission, depth
//! profiles, gradient routing, measurement, memorisation rollback and
//! gradient sketches, on candle.
#![deny(missing_docs)]

pub mod bench;
pub mod blobs;
pub mod campaign;
pub mod data;
pub mod demo;
pub mod error;
pub mod lora;
pub mod memo;
pub mod model;
pub mod optim;
pub mod pergrad;
pub mod pretrain;
pub mod rebuild;
pub mod sink;

pub use error::{Result, TunerError};
