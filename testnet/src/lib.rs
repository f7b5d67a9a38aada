//! Run a local multi-node consortium and drive it: the testnet runner
//! (`govtune testnet ...`), a ledger workload for tests and benchmarks, the
//! operator's campaign on a local testnet, the main job end to end
//! (`govtune demo`) with its HTML report, the network benchmark, and hosts in
//! network namespaces for multi-host tests.

pub mod audit_bench;
pub mod bench;
pub mod campaign;
pub mod demo;
pub mod netns;
pub mod report;
pub mod runner;
pub mod witness_bench;
pub mod workload;

pub use lightclient::{Client, ClientError, LightClient, VerifyError};
pub use runner::{NodeSettings, Testnet, TestnetError};
