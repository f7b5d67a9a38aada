//! Order blocks of complete step events among n = 3f + 1 validators.
//!
//! Not built yet (its own issue): a pure, caller-driven BFT state machine
//! with threshold-BLS certificates. The crate exists so the workspace has
//! the design card's layout; it exports nothing.
