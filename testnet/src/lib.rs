//! Run a local multi-node consortium and the end-to-end governed
//! fine-tuning demo.
//!
//! Not built yet (its own issue); it exports nothing today.
