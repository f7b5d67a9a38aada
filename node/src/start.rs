//! Starting a node: open the store and restore the chain, the consensus
//! engine and the pending entries, start the network and the API, then
//! drive the core with ticks, gossip, requests and API commands until
//! shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use consensus::{BlsThreshold, Config, Engine, SafetyState};
use libp2p::{Multiaddr, PeerId};
use provenance::codec::decode_raw;
use provenance::crypto::VerifiedSignatures;
use provenance::{Bytes, Canonical};
use storage::Store;
use tokio::sync::mpsc;

use crate::api::{self, ApiState};
use crate::checkpoints::Collector;
use crate::config::NodeConfig;
use crate::cosigning::{OfferError, PendingCaps, PendingRecord, Restored, Table};
use crate::ledger::{BlockLimits, Ledger};
use crate::metrics::Metrics;
use crate::p2p::{build_swarm, NetCommand, NetEvent, Network, Topics};
use crate::runtime::{describe, now_ms, read, Core, Internal, NodeError};
use crate::tls::Peer;
use crate::verifier::{carries_signatures, Verifier};

/// A running node's addresses.
#[derive(Debug, Clone)]
pub struct Started {
    /// HTTP API address.
    pub api: SocketAddr,
}

/// Runs a node until `shutdown` completes.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    let (genesis, keyring) = genesis::load_genesis(&cfg.genesis)?;
    let signers = genesis::load_node_keys(&cfg.keys, &genesis, &keyring)?;
    let token = genesis::load_admin_token(&cfg.admin_token)?;
    let genesis = Arc::new(genesis);
    let keyring = Arc::new(keyring);
    // Its peer index: a validator's index, or n and above for a signing
    // member (which follows consensus without voting).
    let me = genesis
        .peer_index(&signers.node)
        .ok_or_else(|| setup(&"node not in genesis"))?;
    let node = genesis
        .node_at(me)
        .cloned()
        .ok_or_else(|| setup(&"node not in genesis"))?;
    let role = keyring
        .authority(&node.authority)
        .map_err(provenance::Error::from)?
        .role;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| setup(&e))?;
    let store = Store::open(&cfg.data_dir, &genesis.origin, &keyring)?;

    let (chain, tip) = Ledger::restore_tip(&store)?;
    let kept = Ledger::kept_blocks(&store)?;
    let safety = match store.safety_state()? {
        Some(b) => {
            decode_raw::<SafetyState<Bytes>>("safety state", &b)
                .map_err(|e| setup(&e))?
                .0
        }
        None => SafetyState::genesis(),
    };
    let store = Arc::new(RwLock::new(store));
    crate::witnessing::start(
        store.clone(),
        keyring.clone(),
        genesis.witnessing.witnesses.clone(),
        genesis.witnessing.interval_ms,
    );
    let params = genesis.params;
    let limits = BlockLimits {
        max_entries: params.max_block_entries as usize,
        max_bytes: params.max_block_bytes as usize,
        heartbeat_ms: params.heartbeat_ms,
        max_skew_ms: genesis.max_clock_skew_ms,
    };
    let mut ledger = Ledger::new(store.clone(), keyring.clone(), limits, tip);
    let note_signer = signers.note_signer().map(Arc::new);
    let consortium = signers.consortium.map(Arc::new);
    if consortium.is_some() != node.validator.is_some() {
        return Err(setup(
            &"a validator's keys hold a consortium key share, a signing member's none",
        ));
    }
    // Consortium signatures checked on the verifier's threads, found here
    // by the engine and the checkpoint collector without a pairing.
    let verified = Arc::new(VerifiedSignatures::default());
    let scheme = match &consortium {
        Some(c) => BlsThreshold::with_cache(keyring.clone(), c.clone(), verified.clone()),
        None => BlsThreshold::observer(keyring.clone(), verified.clone()),
    };
    let ccfg = Config::new(
        me,
        genesis.consortium.n,
        params.view_timeout_ms,
        genesis.max_clock_skew_ms,
    );
    let height = read(&store).head().height;
    let mut engine = Engine::restore(ccfg, scheme, safety, chain);
    if !kept.is_empty() {
        tracing::info!("{} kept unfinalised blocks restored", kept.len());
    }
    engine.restore_blocks(&mut ledger, kept);

    // Network.
    let metrics = Arc::new(Metrics::default());
    let Joined {
        peers,
        index: peer_index,
        net: net_tx,
        events: mut ev_rx,
    } = join(&cfg, &genesis, signers.node_secret, me, metrics.clone(), 4096)?;

    // API.
    {
        let s = read(&store);
        metrics.height.store(s.head().height, Relaxed);
        metrics.log_size.store(s.head().log_size, Relaxed);
    }
    let (api_tx, mut api_rx) = mpsc::channel(1024);
    let inbox = Arc::new(crate::inbox::AuditInbox::default());
    let blobs = Arc::new(crate::blobs::Fetcher::new(
        net_tx.clone(),
        peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != usize::from(me))
            .map(|(_, p)| *p)
            .collect(),
        store.clone(),
        cfg.max_blob_bytes as u64,
    ));
    let (fetched_tx, mut fetched_rx) = mpsc::channel(256);
    blobs.notify(fetched_tx);
    let effects = crate::effect::Effects::new(
        api_tx.clone(),
        keyring.clone(),
        node.authority.clone(),
        role,
        cfg.own_sources.clone(),
    );
    let api_addr = cfg.api_listen.clone().unwrap_or(node.api_listen.clone());
    let bind = |addr: &str, what: &str| -> Result<std::net::TcpListener, NodeError> {
        let l =
            std::net::TcpListener::bind(addr).map_err(|e| setup(&format!("{what} address {addr}: {e}")))?;
        l.set_nonblocking(true).map_err(|e| setup(&e))?;
        Ok(l)
    };
    let listener = bind(&api_addr, "API")?;
    let tls = match (&cfg.tls_certificate, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key, &node.api_certificate.0)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let metrics_listener = match &cfg.metrics_listen {
        Some(a) => Some(bind(a, "metrics")?),
        None => None,
    };
    // The API runs on its own threads: no load on it delays the core's
    // consensus work.
    let api_rt = ApiRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("api")
            .enable_all()
            .build()
            .map_err(|e| setup(&format!("API runtime: {e}")))?,
    ));
    let api_handle = api_rt.handle().cloned().ok_or_else(|| setup(&"API runtime"))?;
    let state = ApiState::new(
        store.clone(),
        api_tx,
        metrics.clone(),
        token,
        node.authority.clone(),
        role,
        genesis.clone(),
        keyring.clone(),
        &cfg,
    )
    .with_inbox(inbox.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut api_stop = stop_rx.clone();
    if let Some(l) = metrics_listener {
        let router = api::metrics_router(state.clone());
        let mut stop = stop_rx.clone();
        api_handle.spawn(async move {
            let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                tracing::error!("metrics listener unusable");
                return;
            };
            let _ = axum::serve(l, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        });
    }
    let server = api_handle.spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            tracing::error!("API listener unusable");
            return;
        };
        let app = api::router(state);
        let stop = async move {
            let _ = api_stop.changed().await;
        };
        match tls {
            Some(config) => {
                let listener = match crate::tls::TlsListener::new(listener, config) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("API listener unusable: {e}");
                        return;
                    }
                };
                let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                    .with_graceful_shutdown(stop)
                    .await;
            }
            None => {
                let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                    .with_graceful_shutdown(stop)
                    .await;
            }
        }
    });
    tracing::info!(
        "node {} ({}, {} {}) at height {height}; API on {scheme}://{api_addr}",
        node.name,
        node.validator
            .map_or_else(|| "signing member".to_string(), |v| format!("validator {v}")),
        role,
        node.authority
    );

    let (members, threshold) = (
        signers.authority.members(),
        usize::from(signers.authority.threshold()),
    );
    let (internal_tx, mut internal_rx) = mpsc::channel(1024);
    let start = engine.start(&mut ledger, now_ms());
    let mut core = Core {
        genesis: genesis.clone(),
        keyring,
        me,
        signer: signers.authority,
        consortium,
        note_signer,
        store: store.clone(),
        engine,
        ledger,
        table: colluding(
            Table::new(node.authority.clone(), genesis.params.max_block_bytes as usize)
                .with_members(node.authority_share, members, threshold)
                .with_expiry(Duration::from_millis(genesis.params.pending_expiry_ms))
                .with_caps(PendingCaps {
                    entries: cfg.max_pending_per_authority,
                    bytes: cfg.max_pending_bytes_per_authority,
                }),
            &node.authority,
        ),
        checkpoints: Collector::new(me).with_cache(verified.clone()),
        verified: verified.clone(),
        peer_index,
        peers,
        net: net_tx,
        internal: internal_tx,
        metrics: metrics.clone(),
        max_skew: genesis.max_clock_skew_ms,
        last_checkpoint_request: Instant::now(),
        blamed: Vec::new(),
        cosign_fault: None,
        effects,
        inbox,
        blobs,
    };
    // Own entries accepted before a restart.
    let saved = read(&store).pending()?;
    for (d, bytes) in saved {
        match PendingRecord::decode(&bytes, now_ms()) {
            Ok(rec) => {
                let restored = Restored {
                    refused: rec.refused,
                    submitted_ms: rec.submitted_ms,
                };
                match core.offer(rec.body, rec.signatures, true, Some(restored)) {
                    // It can never commit: stop offering it.
                    Err(e @ (OfferError::TooLarge { .. } | OfferError::Refused(_))) => {
                        tracing::error!("pending entry {} dropped: {e}", d.short());
                        read(&store).remove_pending(&d)?;
                    }
                    Err(e) => tracing::error!("pending entry {}: {e}", d.short()),
                    Ok(_) => {}
                }
            }
            Err(e) => tracing::error!("pending record {}: {e}", d.short()),
        }
    }
    core.process(start, None)?;

    let (checked_tx, mut checked_rx) = mpsc::channel(4096);
    let verifier = match cfg.verifier_threads {
        0 => None,
        n => Some(
            Verifier::spawn(
                core.keyring.clone(),
                verified.clone(),
                store.clone(),
                checked_tx,
                n,
                4096,
            )
            .map_err(|e| setup(&format!("verifier threads: {e}")))?,
        ),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut slow = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = Box::pin(shutdown);
    let result = loop {
        let step: Result<(), NodeError> = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tick.tick() => {
                let now = now_ms();
                let actions = core.engine.tick(&mut core.ledger, now);
                let r = core.process(actions, None);
                core.settle(None);
                r
            }
            _ = slow.tick() => { core.housekeeping(); Ok(()) }
            Some(ev) = ev_rx.recv() => {
                // Signatures to the verifier (back when its queue is full:
                // then checked here).
                let here = match &verifier {
                    Some(v) if matches!(&ev, NetEvent::Gossip { message, .. } if carries_signatures(message)) => {
                        v.submit(ev).err().map(|e| *e)
                    }
                    _ => Some(ev),
                };
                match here {
                    Some(ev) => on_net(&mut core, &metrics, ev),
                    None => Ok(()),
                }
            }
            Some(ev) = checked_rx.recv() => on_net(&mut core, &metrics, ev),
            Some(cmd) = api_rx.recv() => { core.on_api(cmd); Ok(()) }
            Some(_) = fetched_rx.recv() => {
                // A blob arrived: a proposal refused for lacking it may pass.
                let actions = core.engine.recheck(&mut core.ledger);
                core.process(actions, None)
            }
            Some(i) = internal_rx.recv() => match i {
                Internal::Replies { from, messages } => {
                    let mut r = Ok(());
                    for m in messages {
                        tracing::debug!("reply from {from}: {}", describe(&m));
                        let actions = core.engine.handle(&mut core.ledger, from, m);
                        r = core.process(actions, None);
                        if r.is_err() { break; }
                    }
                    if let (Some(fault), Some(peer)) = (core.settle(Some(from)), core.peers.get(usize::from(from))) {
                        let _ = core.net.try_send(crate::p2p::NetCommand::Punish { peer: *peer, fault });
                    }
                    r
                }
                Internal::Checkpoints(cps) => {
                    for c in cps { core.store_checkpoint(&c); }
                    Ok(())
                }
                Internal::Effect { digest, verdict } => {
                    core.on_effect(digest, verdict);
                    Ok(())
                }
            },
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Err(e) = &result {
        tracing::error!("node stopped: {e}");
    }
    result
}

/// Test-only (feature `collusion`): when `GOVTUNE_COLLUDE` (a comma list
/// of authority ids) names this node's authority, its co-signing checks
/// and its state rules on revoked sources and superseded policies are off.
/// Hands a network event to the core.
fn on_net(core: &mut Core, metrics: &Metrics, ev: NetEvent) -> Result<(), NodeError> {
    match ev {
        NetEvent::Gossip {
            author,
            via,
            id,
            topic,
            message,
        } => core.on_gossip(author, via, id, topic, *message),
        NetEvent::Request {
            peer,
            request,
            channel,
        } => core.on_request(peer, *request, channel),
        NetEvent::Peers(n) => {
            metrics.peers.store(n as u64, Relaxed);
            Ok(())
        }
        NetEvent::Denied => {
            metrics.denied_peers.fetch_add(1, Relaxed);
            Ok(())
        }
    }
}

/// The API's runtime: shut down without blocking when dropped (it is
/// dropped inside the node's own runtime).
struct ApiRuntime(Option<tokio::runtime::Runtime>);

impl ApiRuntime {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle())
    }
}

impl Drop for ApiRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A node's network, running on its own task.
pub(crate) struct Joined {
    /// Each node's peer id, by peer index (validators first).
    pub(crate) peers: Vec<PeerId>,
    /// Peer index by peer id.
    pub(crate) index: HashMap<PeerId, u16>,
    /// Commands to the network.
    pub(crate) net: mpsc::Sender<NetCommand>,
    /// What the network reports.
    pub(crate) events: mpsc::Receiver<NetEvent>,
}

/// Starts validator `me`'s network: its swarm (identity `node_secret`) over
/// genesis's peers, listening where `cfg` says (else genesis), on its own
/// task; `commands` bounds the command queue.
pub(crate) fn join(
    cfg: &NodeConfig,
    genesis: &provenance::Genesis,
    mut node_secret: [u8; 32],
    me: u16,
    metrics: Arc<Metrics>,
    commands: usize,
) -> Result<Joined, NodeError> {
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    let node = genesis.node_at(me).ok_or_else(|| setup(&"node not in genesis"))?;
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut node_secret).map_err(|e| setup(&e))?;
    let GenesisPeers { peers, index, dial } = GenesisPeers::of(genesis, me)?;
    let swarm = build_swarm(key, &peers)?;
    let listen: Multiaddr = cfg
        .p2p_listen
        .clone()
        .unwrap_or(node.p2p_listen.clone())
        .parse()
        .map_err(|e| setup(&format!("p2p listen address: {e}")))?;
    let (net, net_rx) = mpsc::channel(commands);
    let (ev_tx, events) = mpsc::channel(4096);
    let network = Network::new(
        swarm,
        listen,
        Topics::new(&genesis.digest().to_string()),
        dial,
        net_rx,
        ev_tx,
        metrics,
    )?;
    tokio::spawn(network.run());
    Ok(Joined {
        peers,
        index,
        net,
        events,
    })
}

/// Genesis's peers as this node sees them.
pub(crate) struct GenesisPeers {
    /// Each node's peer id, by peer index (validators first).
    pub(crate) peers: Vec<PeerId>,
    /// Peer index by peer id.
    pub(crate) index: HashMap<PeerId, u16>,
    /// The others' addresses, to dial.
    pub(crate) dial: Vec<(PeerId, Multiaddr)>,
}

impl GenesisPeers {
    pub(crate) fn of(genesis: &provenance::Genesis, me: u16) -> Result<Self, NodeError> {
        let setup = |e: String| NodeError::Setup(e);
        let mut out = GenesisPeers {
            peers: Vec::new(),
            index: HashMap::new(),
            dial: Vec::new(),
        };
        for (v, n) in genesis.peer_order().into_iter().enumerate() {
            let v = v as u16;
            let id: PeerId = n
                .peer_id
                .parse()
                .map_err(|e| setup(format!("peer id {}: {e}", n.peer_id)))?;
            out.peers.push(id);
            out.index.insert(id, v);
            if v != me {
                let addr: Multiaddr = format!("{}/p2p/{}", n.p2p_listen, n.peer_id)
                    .parse()
                    .map_err(|e| setup(format!("address of {}: {e}", n.name)))?;
                out.dial.push((id, addr));
            }
        }
        Ok(out)
    }
}

#[cfg(feature = "collusion")]
fn colluding(table: Table, authority: &provenance::AuthorityId) -> Table {
    let named = std::env::var("GOVTUNE_COLLUDE").unwrap_or_default();
    if named.split(',').any(|a| a.trim() == authority.as_str()) {
        tracing::warn!("{authority} colludes (GOVTUNE_COLLUDE): co-signing checks and state rules are off");
        provenance::state::collude();
        table.collude()
    } else {
        table
    }
}

#[cfg(not(feature = "collusion"))]
fn colluding(table: Table, _: &provenance::AuthorityId) -> Table {
    table
}
