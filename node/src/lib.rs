//! Run a consortium node: a permissioned libp2p network that co-signs,
//! orders and replicates governed fine-tuning records.
//!
//! # How an entry travels
//!
//! 1. An authority's own tool POSTs an object to its own node's API
//!    ([`api`]), with the node's admin token. The node checks it, signs its
//!    section with its authority key, stores it durably (`pending`), answers
//!    202 with its digest, and gossips an *offer* ([`wire::Gossip::Offer`]).
//! 2. Every node that must co-sign checks its own part ([`cosign`]) and
//!    gossips its signature, or a refusal with the reason. The submitter
//!    re-offers it, backing off from 1 to 16 s, until it is committed, so
//!    a node that was down or paused still signs when it returns.
//! 3. Once every required authority has signed, each node assembles the
//!    co-signature itself (every share checked on arrival) and the entry
//!    enters its mempool ([`ledger`]).
//! 4. The view's leader proposes a block of complete entries; validators
//!    re-check each entry against the state at the block's parent, check
//!    that they hold every blob its entries name ([`blobs`]: custody, so a
//!    committed entry's blobs outlive any one node), vote, and finalise
//!    ([`consensus`], Simplex). A finalised block is appended
//!    to the RocksDB store in one synced batch, which also drops the
//!    entries from `pending`.
//! 5. Each node signs a share of the checkpoint (origin, size, root,
//!    height) of the block; q shares combine into the consortium signature
//!    a light client checks with the group key from genesis.
//!
//! A lagging or restarted node catches up by consensus block sync (every
//! finalisation certificate checked, every entry's signatures re-checked)
//! and fetches the checkpoints it missed from its peers.
//!
//! [`runtime`] holds the one task that owns all of this; [`p2p`] the
//! libp2p swarm (peers outside genesis are refused when the connection is
//! established, before any protocol substream).

pub mod api;
pub mod blobs;
#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod checkpoints;
pub mod config;
pub mod cosign;
pub mod cosigning;
pub mod effect;
pub mod guard;
pub mod inbox;
pub mod ledger;
pub mod ledger_store;
pub mod metrics;
pub mod p2p;
pub mod runtime;
pub mod start;
pub mod tls;
pub mod trace;
pub mod verifier;
pub mod wire;
pub mod witnessing;

#[cfg(test)]
mod test_world;

pub use config::NodeConfig;
pub use runtime::{EntryStatus, NodeError};
pub use start::{run, Started};

/// Runs the node configured in `config` until SIGINT or SIGTERM: logs to
/// stderr (`RUST_LOG` filters), two worker threads.
pub fn serve(config: &std::path::Path) -> Result<(), NodeError> {
    let cfg = NodeConfig::load(config)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    match cfg.log_format {
        config::LogFormat::Text => logs.init(),
        config::LogFormat::Json => logs.json().init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| NodeError::Setup(format!("runtime: {e}")))?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        #[cfg(feature = "byzantine")]
        if let Some((mode, duration)) = byzantine::from_env()? {
            return byzantine::run(cfg, mode, duration).await.map(|_| ());
        }
        run(cfg, shutdown).await
    })
}
