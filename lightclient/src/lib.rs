//! A light client of a govtune consortium: it holds only the genesis file,
//! trusts no node, and checks what nodes serve. The HTTP client
//! ([`client`]), offline bundles of what a check read ([`bundle`]), the proofs a light client checks ([`light`]), the
//! verifier predicates of a regulator, a rights-holder and an operator
//! ([`verify`]), the checks that need the tuner ([`recompute`], feature
//! `recompute`), what a verifier remembers between runs ([`state`]), a
//! witness of consortium logs and the client nodes submit to it
//! ([`witness`]), and the commands `govtune-verify` and `govtune` share
//! ([`cli`]).
#![deny(missing_docs)]

pub mod bundle;
pub mod cli;
pub mod client;
pub mod light;
pub mod recompute;
pub mod state;
pub mod verify;
pub mod witness;

pub use client::{Client, ClientError};
pub use light::{LightClient, VerifyError};
pub use verify::{Verdict, Verifier};
