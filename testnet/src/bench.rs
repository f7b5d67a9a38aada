//! `govtune bench network`: a 4-node loopback testnet under load.
//!
//! Pre-builds a chain of events (each with examples of both data-source
//! authorities, so all four authorities sign each one), submits them from
//! several client threads to the operator's node, and watches the log of
//! another node to time each event from submission to finality. The floor
//! is what signatures alone cost on this machine: every event needs four
//! section signatures made once and each checked by the three other nodes
//! (4 signs + 12 verifications), plus the governance node's re-run of
//! admission, which checks each example's manifest signature again.
//!
//! On the log the first run wrote, it also measures what one view costs a
//! light client ([`LightFigures`]): a verifier holding the checkpoint from
//! before the run checks the latest one against one node, then against all
//! four (`--node` repeated), and compares the bytes it fetched with the
//! bytes the run appended.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::workload::{submit, Workload};
use crate::{Client, NodeSettings, Testnet, TestnetError};
use lightclient::Verifier;
use provenance::crypto::SignatureScheme;
use provenance::{Digest, EntryBody, SignedCheckpoint};

const MACBETH: &[u8] = include_bytes!("../fixtures/macbeth.txt");
const TWELFTH_NIGHT: &[u8] = include_bytes!("../fixtures/twelfth_night.txt");

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct NetworkBench {
    /// Events to commit.
    pub events: usize,
    /// Examples per event.
    pub examples: usize,
    /// Composite events instead of step events.
    pub composite: bool,
    /// Concurrent submitting clients.
    pub clients: usize,
    /// Also measure what one view costs a light client.
    pub light: bool,
}

/// What one view costs a light client, on the benchmark's log.
#[derive(Debug, Clone)]
pub struct LightFigures {
    /// The log's size.
    pub log_size: u64,
    /// Nodes compared in the second measure.
    pub nodes: usize,
    /// Runs of each measure.
    pub runs: usize,
    /// One node: the latest checkpoint, checked under genesis and proved
    /// to extend the held one: mean ms, bytes fetched per run.
    pub one_ms: f64,
    /// Bytes fetched per run.
    pub one_bytes: u64,
    /// The same, then every other node's latest compared with it.
    pub all_ms: f64,
    /// Bytes fetched per run.
    pub all_bytes: u64,
    /// Canonical bytes the run appended to the log (what a client without
    /// proofs would download to see the same).
    pub appended_bytes: u64,
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct NetworkFigures {
    /// Committed events per second (first submission to last commit).
    pub events_per_sec: f64,
    /// Committed examples per second.
    pub examples_per_sec: f64,
    /// Median submit-to-finality latency (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Events per second signatures alone would allow on this machine.
    pub floor_events_per_sec: f64,
    /// What one view costs a light client (when asked for).
    pub light: Option<LightFigures>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The signature floor (events/s on `cores` cores) for events of
/// `examples` examples: measured sign and verify times of one BLS section
/// signature on this machine.
pub fn signature_floor(examples: usize, cores: f64) -> Result<f64, TestnetError> {
    let dealt = provenance::genesis::deal(
        &provenance::genesis::ConsortiumDescription::local_testnet(1, 2),
        provenance::Timestamp(1),
        &mut rand::rngs::OsRng,
    )
    .map_err(provenance::Error::from)?;
    let signers = dealt.signers().map_err(provenance::Error::from)?;
    let s = &signers[0].authority;
    let msg = b"govtune bench: one section of one event";
    let n = 200;
    let t = Instant::now();
    let mut sig = None;
    for _ in 0..n {
        sig = Some(
            s.sign(SignatureScheme::Bls12381, msg)
                .map_err(provenance::Error::from)?,
        );
    }
    let sign = t.elapsed().as_secs_f64() / n as f64;
    let sig = sig.ok_or_else(|| TestnetError::Run("no signature".into()))?;
    let t = Instant::now();
    for _ in 0..n {
        dealt.keyring.verify(&sig, msg).map_err(provenance::Error::from)?;
    }
    let verify = t.elapsed().as_secs_f64() / n as f64;
    // 4 signs, 12 checks of them, and governance re-checks one manifest
    // signature per example when it re-runs admission.
    let per_event = 4.0 * sign + 12.0 * verify + examples as f64 * verify;
    Ok(cores / per_event)
}

/// Runs the benchmark with the `govtune` binary at `binary`.
pub fn run_network(binary: &Path, b: NetworkBench) -> Result<NetworkFigures, TestnetError> {
    let dir = std::env::temp_dir().join(format!("govtune-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_block_entries: Some(512),
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(&dir, 4, binary, &settings)?;
    t.start_all()?;
    t.wait_all_healthy(Duration::from_secs(120))?;
    let mut w = Workload::new(&t, &[("Macbeth", MACBETH), ("Twelfth Night", TWELFTH_NIGHT)])?;
    w.register(&t)?;
    let op = t.by_role("operator")?;
    let admin = t.admin(op)?;
    let watcher = t.client((op + 1) % 4);
    let start_size = watcher.health()?.log_size;
    let light = crate::LightClient::from_genesis_file(&t.genesis_path())?;
    let held = light.latest_checkpoint(&watcher)?;
    let submitted: Arc<Mutex<HashMap<Digest, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    // Events are made when a client takes one (their step time is "now"),
    // in chain order under the lock, and submitted outside it.
    let queue: Arc<Mutex<(Workload, usize)>> = Arc::new(Mutex::new((w, b.events)));
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..b.clients.max(1) {
        let (queue, submitted, admin) = (queue.clone(), submitted.clone(), admin.clone());
        threads.push(std::thread::spawn(move || -> Result<(), TestnetError> {
            loop {
                let body: EntryBody = {
                    let mut q = queue
                        .lock()
                        .map_err(|_| TestnetError::Run("a client thread panicked".into()))?;
                    if q.1 == 0 {
                        return Ok(());
                    }
                    q.1 -= 1;
                    let body = q.0.next_event(b.examples, b.composite)?;
                    let d = body.digest();
                    submitted
                        .lock()
                        .map_err(|_| TestnetError::Run("a client thread panicked".into()))?
                        .insert(d, Instant::now());
                    body
                };
                submit(&admin, &body)?;
            }
        }));
    }
    // Watch the log grow and time each event's commit.
    let mut latencies = Vec::with_capacity(b.events);
    let mut appended_bytes = 0u64;
    let mut next = start_size;
    let target = start_size + b.events as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while next < target {
        if Instant::now() > deadline {
            return Err(TestnetError::Run(format!(
                "only {} of {} events committed",
                next - start_size,
                b.events
            )));
        }
        let size = watcher.health()?.log_size;
        if size <= next {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let now = Instant::now();
        let mut start = next;
        while start < size {
            let end = (start + 256).min(size);
            let a = watcher.leaves(start, end)?;
            let got = (a.leaves.len() as u64).max(1);
            for l in a.leaves {
                appended_bytes += l.leaf.len() as u64;
                if let Some(at) = submitted.lock().ok().and_then(|m| m.get(&l.digest).copied()) {
                    latencies.push(now.duration_since(at).as_secs_f64() * 1000.0);
                }
            }
            start += got;
        }
        next = size;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for th in threads {
        th.join()
            .map_err(|_| TestnetError::Run("a client thread panicked".into()))??;
    }
    let light = match b.light {
        true => Some(light_figures(&t, &held, target, appended_bytes)?),
        false => None,
    };
    t.down()?;
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_by(|a, b| a.total_cmp(b));
    let examples = b.examples.max(2);
    Ok(NetworkFigures {
        events_per_sec: b.events as f64 / elapsed,
        examples_per_sec: (b.events * examples) as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        floor_events_per_sec: signature_floor(examples, 2.0)?,
        light,
    })
}

/// A verifier holding `held` (the checkpoint from before the run) checks
/// the latest checkpoint, once the log's `size` is certified, against one
/// node and then against all of them.
fn light_figures(
    t: &Testnet,
    held: &SignedCheckpoint,
    size: u64,
    appended_bytes: u64,
) -> Result<LightFigures, TestnetError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while t
        .nodes
        .iter()
        .enumerate()
        .any(|(i, _)| t.client(i).checkpoint(None).map_or(true, |c| c.size < size))
    {
        if Instant::now() > deadline {
            return Err(TestnetError::Run(format!(
                "size {size} not certified at every node"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let genesis = t.genesis_path();
    let runs = 20;
    let measure = |compare: bool| -> Result<(f64, u64), TestnetError> {
        let mut bytes = 0;
        let started = Instant::now();
        for _ in 0..runs {
            let clients: Vec<Client> = (0..t.nodes.len()).map(|i| t.client(i)).collect();
            let mut v = Verifier::new(&genesis, clients[0].clone())?;
            v.hold(held.clone());
            v.latest()?;
            if compare {
                for c in &clients[1..] {
                    v.compare(c)?;
                }
            }
            bytes += clients.iter().map(Client::bytes_fetched).sum::<u64>();
        }
        Ok((
            started.elapsed().as_secs_f64() * 1000.0 / runs as f64,
            bytes / runs as u64,
        ))
    };
    let (one_ms, one_bytes) = measure(false)?;
    let (all_ms, all_bytes) = measure(true)?;
    Ok(LightFigures {
        log_size: size,
        nodes: t.nodes.len(),
        runs,
        one_ms,
        one_bytes,
        all_ms,
        all_bytes,
        appended_bytes,
    })
}

/// What https costs an API client, against plain HTTP on the same kind of
/// testnet (one run each).
#[derive(Debug, Clone)]
pub struct TransportFigures {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// Milliseconds per `/v1/checkpoint` on one kept-alive connection.
    pub pooled_ms: f64,
    /// Milliseconds per `/v1/checkpoint` with a new client and connection
    /// each (TCP, and for https the client's TLS set-up and handshake).
    pub fresh_ms: f64,
    /// Milliseconds for a light client's verified latest checkpoint (the
    /// genesis file read and checked, a new client, the consortium's
    /// signature checked): what one `govtune verify checkpoint` does.
    pub verified_ms: f64,
}

/// Starts a 4-node testnet over http, then one over https, and times
/// `requests` checkpoint reads of each kind against each.
pub fn run_transport(binary: &Path, requests: usize) -> Result<Vec<TransportFigures>, TestnetError> {
    let mut out = Vec::new();
    for tls in [false, true] {
        let dir = std::env::temp_dir().join(format!("govtune-bench-tls-{}-{tls}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = NodeSettings {
            tls,
            ..NodeSettings::default()
        };
        let mut t = Testnet::create(&dir, 4, binary, &settings)?;
        t.start_all()?;
        t.wait_all_healthy(Duration::from_secs(120))?;
        let n = requests.max(1);
        let pooled = t.client(0);
        pooled.checkpoint(None)?;
        let start = Instant::now();
        for _ in 0..n {
            pooled.checkpoint(None)?;
        }
        let pooled_ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
        // A new client (agent, TLS configuration) and connection each.
        let pins = crate::LightClient::from_genesis_file(&t.genesis_path())?;
        let start = Instant::now();
        for _ in 0..n {
            pins.trust(crate::Client::new(&t.nodes[0].api)).checkpoint(None)?;
        }
        let fresh_ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
        let runs = n.min(50);
        let start = Instant::now();
        for _ in 0..runs {
            let light = crate::LightClient::from_genesis_file(&t.genesis_path())?;
            light.latest_checkpoint(&light.trust(crate::Client::new(&t.nodes[0].api)))?;
        }
        let verified_ms = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
        t.down()?;
        let _ = std::fs::remove_dir_all(&dir);
        out.push(TransportFigures {
            scheme: if tls { "https" } else { "http" },
            pooled_ms,
            fresh_ms,
            verified_ms,
        });
    }
    Ok(out)
}

/// `len` pseudo-random bytes from `seed` (xorshift64): incompressible
/// test blobs.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What replicating one blob costs, on a 4-node loopback testnet.
#[derive(Debug, Clone)]
pub struct BlobFigures {
    /// The blob's size (bytes).
    pub bytes: u64,
    /// Seconds to put it at the operator's node (`PUT /v1/blobs`, one
    /// HTTP upload): the raw transfer the replication is compared with.
    pub put_s: f64,
    /// Seconds for another node to serve it, fetching it from its peers
    /// over p2p in 4 MiB parts, checking it and keeping it.
    pub replicate_s: f64,
    /// Seconds for that node to serve it again, from its own store.
    pub local_s: f64,
}

/// Puts a pseudo-random blob of each size (MiB) at the operator's node of
/// a fresh 4-node testnet, then asks each other node for it in turn (the
/// first fetches it from the operator's node, the later ones from whoever
/// answers first), timing the first node's fetch and its second read.
pub fn run_blobs(binary: &Path, sizes_mib: &[u64]) -> Result<Vec<BlobFigures>, TestnetError> {
    let dir = std::env::temp_dir().join(format!("govtune-bench-blobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut t = Testnet::create(&dir, 4, binary, &NodeSettings::default())?;
    t.start_all()?;
    t.wait_all_healthy(Duration::from_secs(120))?;
    let op = t.by_role("operator")?;
    let others: Vec<usize> = (0..t.nodes.len()).filter(|&i| i != op).collect();
    let mut out = Vec::new();
    for &mib in sizes_mib {
        let blob = noise(usize::try_from(mib << 20).unwrap_or(usize::MAX), mib);
        let admin = t.admin(op)?.with_timeout(Duration::from_secs(300));
        let start = Instant::now();
        let d = admin.put_blob(&blob)?;
        let put_s = start.elapsed().as_secs_f64();
        let path = format!("/v1/blobs/{}", d.to_hex());
        let mut replicate_s = 0.0;
        let mut local_s = 0.0;
        for (k, &i) in others.iter().enumerate() {
            let c = t.client(i).with_timeout(Duration::from_secs(300));
            let start = Instant::now();
            let got = c.get_bytes(&path)?;
            let took = start.elapsed().as_secs_f64();
            if got != blob {
                return Err(TestnetError::Run(format!("node {i} served other bytes for {d}")));
            }
            if k == 0 {
                replicate_s = took;
                let start = Instant::now();
                c.get_bytes(&path)?;
                local_s = start.elapsed().as_secs_f64();
            }
        }
        out.push(BlobFigures {
            bytes: blob.len() as u64,
            put_s,
            replicate_s,
            local_s,
        });
    }
    t.down()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
