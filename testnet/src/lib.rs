//! Run a local multi-node consortium, drive it and check it from outside:
//! the testnet runner (`govtune testnet ...`), a blocking API client, a
//! light client that holds only the genesis file, and a ledger workload
//! for tests and benchmarks.

pub mod answer;
pub mod client;
pub mod light;
pub mod runner;
pub mod verify;
pub mod workload;

pub use client::{Client, ClientError};
pub use light::{LightClient, VerifyError};
pub use runner::{NodeSettings, Testnet, TestnetError};
