//! The network end to end with real processes: 4 `govtune node`s on
//! loopback, driven through their HTTP APIs and checked by a light client
//! that holds only the genesis file.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use lightclient::client::Answer;
use provenance::api::{EntryState, EntryStatus, ErrorBody};
use provenance::{Canonical, EntryBody, LedgerEntry, MemoryLedgerView};
use testnet::workload::{submit, Workload};
use testnet::{Client, ClientError, LightClient, NodeSettings, Testnet};

const MACBETH: &[u8] = include_bytes!("../../../testnet/fixtures/macbeth.txt");
const TWELFTH_NIGHT: &[u8] = include_bytes!("../../../testnet/fixtures/twelfth_night.txt");

fn up(dir: &Path) -> Testnet {
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_block_entries: None,
        ..NodeSettings::default()
    };
    let mut t =
        Testnet::create(dir, 4, Path::new(env!("CARGO_BIN_EXE_govtune")), &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    t
}

fn workload(t: &Testnet) -> Workload {
    let mut w =
        Workload::new(t, &[("Macbeth", MACBETH), ("Twelfth Night", TWELFTH_NIGHT)]).expect("workload");
    w.register(t).expect("register");
    w
}

fn log_size(c: &Client) -> u64 {
    c.health().expect("health").log_size
}

/// Every committed leaf of `node`, in order.
fn all_leaves(node: &Client, size: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + 256).min(size);
        let a = node.leaves(start, end).expect("leaves");
        assert!(!a.leaves.is_empty(), "no leaves for {start}..{end}");
        start += a.leaves.len() as u64;
        out.extend(a.leaves.into_iter().map(|l| l.leaf.0));
    }
    out
}

fn wait_checkpoint_at_least(light: &LightClient, node: &Client, size: u64) -> provenance::SignedCheckpoint {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(cp) = light.latest_checkpoint(node) {
            if cp.checkpoint.size >= size {
                return cp;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint covering {size} entries");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn four_processes_commit_1000_events_that_a_light_client_verifies() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = up(dir.path());
    let mut w = workload(&t);
    let op = t.admin(t.by_role("operator").expect("op")).expect("admin");
    let base = log_size(&op);
    let mut digests = Vec::new();
    let started = Instant::now();
    for _ in 0..1000 {
        let e = w.next_event(2, false).expect("event");
        digests.push(submit(&op, &e).expect("accepted"));
    }
    let submitted = started.elapsed();
    op.wait_committed(&digests, Duration::from_secs(300))
        .expect("committed");
    println!(
        "1000 events: submitted in {submitted:?}, all committed after {:?}",
        started.elapsed()
    );
    let (size, root) = t
        .wait_converged(base + 1000, Duration::from_secs(120))
        .expect("converged");
    assert_eq!(size, base + 1000);
    println!("4 nodes agree: log size {size}, root {root}");

    // Every entry carries every signature its kind requires.
    let (_, keyring) = genesis::load_genesis(&t.genesis_path()).expect("genesis");
    let mut view = MemoryLedgerView::default();
    let leaves = all_leaves(&t.client(1), size);
    let mut events = 0;
    for leaf in &leaves {
        let e: LedgerEntry = provenance::decode(leaf).expect("decodes");
        e.verify(&keyring, &view).expect("every required signature");
        if matches!(e.body, EntryBody::Step(_)) {
            events += 1;
        }
        view.apply(&e.body);
    }
    assert_eq!(events, 1000);
    let committed: HashSet<_> = leaves
        .iter()
        .map(|l| {
            provenance::decode::<LedgerEntry>(l)
                .expect("decodes")
                .body
                .digest()
        })
        .collect();
    assert!(digests.iter().all(|d| committed.contains(d)));

    // A light client with only the genesis file.
    let light = LightClient::from_genesis_file(&t.genesis_path()).expect("light client");
    for i in 0..4 {
        let node = t.client(i);
        let cp = wait_checkpoint_at_least(&light, &node, size);
        assert_eq!(cp.checkpoint.root.to_string(), root);
        for index in [0, 1, size / 3, size / 2, size - 2, size - 1] {
            light
                .fetch_entry(&node, &cp, index)
                .expect("inclusion proof verifies");
        }
        let earlier = light.checkpoint_at(&node, 3).expect("an early checkpoint");
        light
            .verify_extends(&node, &earlier, &cp)
            .expect("consistency proof verifies");
    }

    // ...and rejects a checkpoint signed by a key not in genesis,
    let node = t.client(0);
    let cp = light.latest_checkpoint(&node).expect("checkpoint");
    let other = provenance::genesis::deal(
        &provenance::genesis::ConsortiumDescription::local_testnet(1, 2),
        provenance::Timestamp(1),
        &mut rand::rngs::OsRng,
    )
    .expect("another consortium");
    let signers = other.signers().expect("signers");
    let msg = cp.checkpoint.signing_message();
    let shares: Vec<_> = signers
        .iter()
        .take(3)
        .map(|s| s.consortium.as_ref().expect("a validator").sign_share(&msg))
        .collect();
    let forged = provenance::SignedCheckpoint {
        checkpoint: cp.checkpoint.clone(),
        signature: other
            .keyring
            .combine_consortium_shares(&msg, &shares)
            .expect("combine"),
        validators: Vec::new(),
    };
    assert!(light.verify_checkpoint(&forged).is_err());
    // ...or by q validator note keys not in genesis,
    let forged = provenance::SignedCheckpoint {
        checkpoint: cp.checkpoint.clone(),
        signature: provenance::Bytes::default(),
        validators: signers
            .iter()
            .take(3)
            .filter_map(|s| s.sign_note(&cp.checkpoint))
            .collect(),
    };
    assert!(light.verify_checkpoint(&forged).is_err());
    // ...while the real checkpoint's q validator note signatures stand
    // without its BLS signature.
    assert!(
        cp.validators.len() >= 3,
        "a certified checkpoint carries q note signatures"
    );
    let notes_only = provenance::SignedCheckpoint {
        signature: provenance::Bytes::default(),
        ..cp.clone()
    };
    light
        .verify_checkpoint(&notes_only)
        .expect("q validators' note signatures verify");
    // ...and a proof with one hash changed.
    let a = node.inclusion_proof(5, cp.checkpoint.size).expect("proof");
    let (leaf, mut proof) = (a.leaf.0, a.proof);
    light
        .verify_leaf(&cp, 5, &leaf, &proof)
        .expect("the honest proof verifies");
    proof[0].0[0] ^= 1;
    assert!(light.verify_leaf(&cp, 5, &leaf, &proof).is_err());
}

#[test]
fn nothing_acknowledged_is_lost_when_nodes_are_killed_and_paused() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut t = up(dir.path());
    let mut w = workload(&t);
    let op_i = t.by_role("operator").expect("op");
    let op = t.admin(op_i).expect("admin");
    let ds = t.by_role("data-source").expect("ds");
    let base = log_size(&op);
    let mut acknowledged = Vec::new();
    let submit_some = |w: &mut Workload, n: usize, acknowledged: &mut Vec<_>| {
        for _ in 0..n {
            let e = w.next_event(2, false).expect("event");
            // The operator's node may be down: retry until it acknowledges.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match submit(&op, &e) {
                    Ok(d) => {
                        acknowledged.push(d);
                        break;
                    }
                    Err(err) => {
                        assert!(Instant::now() < deadline, "never acknowledged: {err}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    };
    submit_some(&mut w, 100, &mut acknowledged);
    // SIGKILL the operator's node right after it acknowledged events.
    t.kill(op_i).expect("kill");
    std::thread::sleep(Duration::from_millis(500));
    t.start(op_i).expect("restart");
    submit_some(&mut w, 100, &mut acknowledged);
    // Pause a data-source authority's node: its signatures stop.
    t.pause(ds).expect("pause");
    submit_some(&mut w, 50, &mut acknowledged);
    std::thread::sleep(Duration::from_secs(2));
    t.resume(ds).expect("resume");
    submit_some(&mut w, 50, &mut acknowledged);
    op.wait_committed(&acknowledged, Duration::from_secs(300))
        .expect("every acknowledged event commits");
    let (size, _) = t
        .wait_converged(base + acknowledged.len() as u64, Duration::from_secs(120))
        .expect("roots agree");
    assert_eq!(size, base + acknowledged.len() as u64);
}

#[test]
fn refusals_are_typed_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut t = up(dir.path());
    let mut w = workload(&t);
    let op_i = t.by_role("operator").expect("op");
    let ds_i = t.by_role("data-source").expect("ds");
    let op = t.admin(op_i).expect("admin");
    fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
        match r {
            Err(ClientError::Status { status, body, .. }) => {
                let e: ErrorBody = serde_json::from_str(&body).expect("a JSON reason");
                assert!(!e.error.is_empty(), "{body}");
                status
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let e = w.next_event(2, false).expect("event");
    // Without the token, and with a wrong one.
    assert_eq!(status_of(t.client(op_i).submit_event(&e)), 401);
    assert_eq!(
        status_of(t.client(op_i).with_token(&"0".repeat(64)).submit_event(&e)),
        401
    );
    // To the wrong role's node (with that node's own token).
    assert_eq!(status_of(t.admin(ds_i).expect("admin").submit_event(&e)), 403);
    assert_eq!(status_of(op.post("/v1/policies", &w.policy)), 403);
    // Malformed JSON, and JSON of the wrong shape.
    assert_eq!(status_of(op.post_raw("/v1/events", b"{\"Step\": [1, 2")), 400);
    assert_eq!(
        status_of(op.post_raw("/v1/events", b"{\"Step\": {\"version\": 1}}")),
        400
    );
    // An oversized body (read while it is sent: the node answers after
    // reading up to its limit and closes, which a write-first client sees as a
    // broken pipe).
    let big = vec![b' '; 5 << 20];
    assert_eq!(status_of(post_raw_streaming(&op, "/v1/events", &big)), 413);
    // A registration that fits the API's body limit (4.09 MB of JSON) but
    // not a block (4.8 MB encoded): refused with the reason, and a normal
    // registration after it commits at once (it used to halt every commit).
    let ds_admin = t.admin(w.sources[0].node).expect("admin");
    let mut huge = w.sources[0].manifest.clone();
    huge.title = "oversized".into();
    huge.segmentation = provenance::manifest::Segmentation::Boundaries {
        offsets: (0..600_000).collect(),
    };
    let json = serde_json::to_vec(&huge).expect("json");
    assert!(json.len() < 4 << 20, "{}", json.len());
    match post_raw_streaming(&ds_admin, "/v1/sources", &json) {
        Err(ClientError::Status { status, body, .. }) => {
            assert_eq!(status, 413, "{body}");
            assert!(body.contains("max_block_bytes"), "{body}");
        }
        other => panic!("an entry larger than a block is refused, got {other:?}"),
    }
    let mut normal = w.sources[0].manifest.clone();
    normal.title = "registered after the oversized one".into();
    let d = ds_admin.submit("/v1/sources", &normal).expect("accepted").digest;
    op.wait_committed(&[d], Duration::from_secs(10))
        .expect("a normal registration commits within 10 s");
    let before = log_size(&op);
    // Bad query parameters.
    assert_eq!(status_of(op.get("/v1/proof/inclusion?index=10&size=5")), 400);
    assert_eq!(status_of(op.get("/v1/events/not-hex")), 400);
    // An event a co-signer must refuse: an example not in its source.
    let forged = w.forged_event().expect("forged");
    let d = submit(&op, &forged).expect("accepted for co-signing");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (by, reason) = loop {
        let a = op.status(&d).expect("status");
        if let EntryState::Uncommitted(EntryStatus::Refused { by, reason }) = a.state {
            break (by, reason);
        }
        assert!(Instant::now() < deadline, "not refused: {a:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(by.as_str(), t.nodes[ds_i].authority.as_str());
    assert!(reason.contains("is not in source"), "{reason}");
    // Nothing changed: the honest event still commits as the next link.
    let d = submit(&op, &e).expect("accepted");
    op.wait_committed(&[d], Duration::from_secs(60))
        .expect("committed");
    assert_eq!(log_size(&op), before + 1);

    // A step the data sources co-signed while its source was live, held
    // (governance paused) until the source's revocation committed: it
    // never enters the log, and its status names the revocation.
    let gov_i = t.by_role("governance").expect("gov");
    t.pause(gov_i).expect("pause governance");
    let held = submit(&op, &w.next_event(2, false).expect("event")).expect("accepted");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match op.status(&held).expect("status").state {
            EntryState::Uncommitted(EntryStatus::Pending { missing, .. })
                if missing.len() == 1 && missing[0].as_str() == t.nodes[gov_i].authority =>
            {
                break
            }
            s => assert!(Instant::now() < deadline, "the data sources did not sign: {s:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let revoked = w.sources[0].manifest.source_id();
    let rd = ds_admin
        .submit(
            "/v1/revocations",
            &provenance::Revocation {
                version: 1,
                authority: w.sources[0].manifest.authority.clone(),
                source: revoked,
                reason: "consent withdrawn".into(),
                requested: provenance::Timestamp(testnet::workload::now_ms()),
            },
        )
        .expect("revocation")
        .digest;
    op.wait_committed(&[rd], Duration::from_secs(30))
        .expect("revocation committed");
    let expired = |c: &Client| match c.status(&held).expect("status").state {
        EntryState::Uncommitted(EntryStatus::Expired { reason }) => Some(reason),
        _ => None,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let reason = loop {
        if let Some(r) = expired(&op) {
            break r;
        }
        assert!(Instant::now() < deadline, "not expired: {:?}", op.status(&held));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        reason.contains("was revoked") && reason.contains(&revoked.short().to_string()),
        "{reason}"
    );
    t.resume(gov_i).expect("resume governance");
    let size = log_size(&op);
    let d = ds_admin.submit("/v1/sources", &{
        let mut m = w.sources[0].manifest.clone();
        m.title = "registered after the revocation".into();
        m
    });
    op.wait_committed(&[d.expect("accepted").digest], Duration::from_secs(30))
        .expect("commits go on");
    assert!(expired(&op).is_some(), "still expired");
    // The paused governance node may never have heard of the step (404):
    // that too is "not committed".
    for i in 0..t.nodes.len() {
        match t.client(i).status(&held) {
            Ok(s) => assert!(
                !matches!(s.state, EntryState::Committed(_)),
                "node {i} committed the held step"
            ),
            Err(ClientError::Status { status: 404, .. }) => {}
            Err(e) => panic!("node {i}: {e}"),
        }
    }
    assert_eq!(log_size(&op), size + 1, "only the registration committed");

    // A campaign under a policy its successor superseded: 409 with the
    // reason (consensus would refuse it too).
    let gov = t.admin(t.by_role("governance").expect("gov")).expect("admin");
    let mut successor = w.policy.clone();
    successor.supersedes = Some(w.policy.digest());
    successor.policy_version += 1;
    let pd = gov.submit("/v1/policies", &successor).expect("successor").digest;
    op.wait_committed(&[pd], Duration::from_secs(30))
        .expect("committed");
    let mut late = w.campaign.clone();
    late.name = "opened after the successor".into();
    match op.submit("/v1/campaigns", &late) {
        Err(ClientError::Status { status, body, .. }) => {
            assert_eq!(status, 409, "{body}");
            assert!(body.contains("superseded"), "{body}");
        }
        other => panic!("a campaign under a superseded policy is refused, got {other:?}"),
    }

    // A peer not in genesis never gets a protocol substream.
    unknown_peer_is_refused(&t);
}

fn unknown_peer_is_refused(t: &Testnet) {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let (g, _) = genesis::load_genesis(&t.genesis_path()).expect("genesis");
    let target = &g.nodes[0];
    let peer: libp2p::PeerId = target.peer_id.parse().expect("peer id");
    let addr: libp2p::Multiaddr = target.p2p_listen.parse().expect("addr");
    let denied_before = metric(&t.client(0), "govtune_p2p_denied_total");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut swarm = node::p2p::build_swarm(key, &[peer]).expect("swarm");
        swarm.dial(addr).expect("dial");
        let id = swarm
            .behaviour_mut()
            .rpc
            .send_request(&peer, provenance::Bytes(vec![0; 8]));
        let topics = node::p2p::Topics::new(&g.digest().to_string());
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topics.events)
            .expect("subscribe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut failed = false;
        loop {
            let ev = tokio::time::timeout_at(deadline, swarm.select_next_some()).await;
            match ev {
                Err(_) => break,
                Ok(SwarmEvent::Behaviour(node::p2p::BehaviourEvent::Gossipsub(e))) => {
                    panic!("the node opened a gossipsub substream to an unknown peer: {e:?}")
                }
                Ok(SwarmEvent::Behaviour(node::p2p::BehaviourEvent::Rpc(
                    libp2p::request_response::Event::Message { .. },
                ))) => panic!("the node answered an unknown peer"),
                Ok(SwarmEvent::Behaviour(node::p2p::BehaviourEvent::Rpc(
                    libp2p::request_response::Event::OutboundFailure { request_id, .. },
                ))) if request_id == id => {
                    failed = true;
                }
                Ok(SwarmEvent::Behaviour(node::p2p::BehaviourEvent::Rpc(
                    libp2p::request_response::Event::InboundFailure { .. },
                ))) => panic!("the node opened a request-response substream"),
                Ok(_) => {}
            }
            if failed {
                // Linger a little: a late substream would still show up.
                tokio::time::sleep(Duration::from_millis(500)).await;
                while let Ok(ev) =
                    tokio::time::timeout(Duration::from_millis(10), swarm.select_next_some()).await
                {
                    if let SwarmEvent::Behaviour(node::p2p::BehaviourEvent::Gossipsub(e)) = ev {
                        panic!("the node opened a gossipsub substream to an unknown peer: {e:?}");
                    }
                }
                break;
            }
        }
        assert!(failed, "the request of an unknown peer did not fail");
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&t.client(0), "govtune_p2p_denied_total") <= denied_before {
        assert!(
            Instant::now() < deadline,
            "the node did not count the refused connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(c: &Client, name: &str) -> f64 {
    c.metrics()
        .expect("metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn the_whole_consortium_restarts_mid_run_and_keeps_committing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut t = up(dir.path());
    let mut w = workload(&t);
    let op = t.admin(t.by_role("operator").expect("op")).expect("admin");
    let base = log_size(&op);
    let mut acknowledged = Vec::new();
    for _ in 0..60 {
        let e = w.next_event(2, false).expect("event");
        acknowledged.push(submit(&op, &e).expect("accepted"));
    }
    // Every node at once, blocks possibly notarised but not final: after
    // the restart nobody has judged the tip in memory any more.
    for i in 0..4 {
        t.kill(i).expect("kill");
    }
    t.start_all().expect("restart");
    for i in 0..4 {
        t.wait_healthy(i, Duration::from_secs(60)).expect("healthy");
    }
    for _ in 0..60 {
        let e = w.next_event(2, false).expect("event");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match submit(&op, &e) {
                Ok(d) => {
                    acknowledged.push(d);
                    break;
                }
                Err(err) => {
                    assert!(Instant::now() < deadline, "never acknowledged: {err}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    op.wait_committed(&acknowledged, Duration::from_secs(180))
        .expect("all commit after the restart");
    let (size, _) = t
        .wait_converged(base + acknowledged.len() as u64, Duration::from_secs(60))
        .expect("roots agree");
    assert_eq!(size, base + 120);
}

/// POST raw bytes while reading the answer on the same connection, so
/// that a node which answers before it has read the whole body (413 for a
/// body over its limit, after reading up to the limit) is heard, not seen
/// as a broken pipe: a blocking client that writes the whole body first
/// loses the answer when the node closes the connection. HTTP/1.1 over
/// plain TCP, `Connection: close`: test-only, the one place a raw HTTP
/// exchange is written by hand.
fn post_raw_streaming(client: &Client, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
    use std::io::{Read, Write};
    let url = format!("{}{path}", client.base());
    let token = client.token().map(str::to_string);
    let transport = |reason: String| ClientError::Transport {
        url: url.clone(),
        reason,
    };
    let host = client
        .base()
        .strip_prefix("http://")
        .ok_or_else(|| transport("only http:// URLs are supported here".into()))?;
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| transport(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| transport(e.to_string()))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(t) = &token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone().map_err(|e| transport(e.to_string()))?;
    let owned = body.to_vec();
    // The writer may fail once the node has answered and closed: that is
    // the case this method exists for, so its error is not the answer.
    let sender = std::thread::spawn(move || {
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&owned));
    });
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    if raw.is_empty() {
        return Err(transport(match read {
            Err(e) => e.to_string(),
            Ok(_) => "the node closed the connection without an answer".into(),
        }));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| transport("an answer without a complete header".into()))?;
    let header = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = header
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| transport(format!("not an HTTP status line: {header}")))?;
    let mut content = raw[split + 4..].to_vec();
    if header.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        content = dechunk(&content).ok_or_else(|| transport("a malformed chunked body".into()))?;
    }
    let text = String::from_utf8_lossy(&content).to_string();
    if status >= 400 {
        return Err(ClientError::Status {
            url,
            status,
            body: text,
        });
    }
    let body = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    Ok(Answer { status, body })
}

/// The payload of an HTTP/1.1 chunked body, or `None` if it is malformed.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// Stops the second data-source validator, runs `load` (which returns what
/// it did, for the log) while the three others go on, restarts it and
/// returns how long it took to reach their height.
fn stopped_validator_catches_up(
    settings: &NodeSettings,
    load: impl FnOnce(&Testnet, &mut Workload) -> String,
) -> Duration {
    let dir = tempfile::tempdir().expect("tmp");
    let mut t =
        Testnet::create(dir.path(), 4, Path::new(env!("CARGO_BIN_EXE_govtune")), settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let mut w = workload(&t);
    let reg = w.sources[0].node;
    let stopped = (0..t.nodes.len())
        .find(|&i| i != reg && t.nodes[i].role == "data-source")
        .expect("a second data-source node");
    t.kill(stopped).expect("kill");
    let started = Instant::now();
    let did = load(&t, &mut w);
    let reader = t.client(reg);
    let target = reader.health().expect("health").height;
    eprintln!(
        "{did}; height {target} after {:?} with node {stopped} stopped",
        started.elapsed()
    );
    t.start(stopped).expect("restart");
    let restarted = Instant::now();
    let node = t.client(stopped);
    loop {
        if node.health().is_ok_and(|h| h.height >= target) {
            break;
        }
        if restarted.elapsed() > Duration::from_secs(60) {
            t.dump_log_tails(20);
            panic!(
                "node {stopped} at height {:?} of {target} after 60 s",
                node.health().map(|h| h.height)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = restarted.elapsed();
    eprintln!("node {stopped} reached height {target} {took:?} after its restart");
    let size = log_size(&reader);
    t.wait_converged(size, Duration::from_secs(30))
        .expect("converged");
    t.down().expect("down");
    took
}

/// A validator stopped while the others finalise more than 3,000 heights
/// catches up within 60 s of its restart: sync is served from the others'
/// stores, chunk after chunk (the heartbeat and view timeout are short so
/// that the heights come fast). Meanwhile a step that needs the stopped
/// authority's signature expires after the genesis expiry (20 s here) and
/// its node stops offering it: the re-offer counter stays flat for 30 s.
#[test]
fn a_validator_stopped_for_thousands_of_heights_catches_up() {
    let settings = NodeSettings {
        view_timeout_ms: Some(100),
        heartbeat_ms: Some(5),
        max_block_entries: None,
        pending_expiry_ms: Some(20_000),
        ..NodeSettings::default()
    };
    stopped_validator_catches_up(&settings, |t, w| {
        let op_i = t.by_role("operator").expect("op");
        let op = t.admin(op_i).expect("admin");
        let step = submit(&op, &w.next_event(2, false).expect("event")).expect("accepted");
        let submitted = Instant::now();
        let reoffers = || metric(&t.client(op_i), "govtune_reoffers_total");
        let mut flat_since: Option<(Instant, f64)> = None;
        let reader = t.client(w.sources[0].node);
        let from = reader.health().expect("health").height;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let h = reader.health().expect("health").height;
            match (&flat_since, op.status(&step).expect("status").state) {
                (None, EntryState::Uncommitted(EntryStatus::Expired { reason })) => {
                    let after = submitted.elapsed();
                    assert!(
                        after >= Duration::from_secs(19),
                        "expired after {after:?}: {reason}"
                    );
                    assert!(reason.contains("within 20 s"), "{reason}");
                    eprintln!("the step expired {after:?} after its submission: {reason}");
                    flat_since = Some((Instant::now(), reoffers()));
                }
                (None, EntryState::Uncommitted(EntryStatus::Pending { .. })) => assert!(
                    submitted.elapsed() < Duration::from_secs(30),
                    "still pending 30 s after its submission"
                ),
                (None, s) => panic!("the step can only expire: {s:?}"),
                (Some(_), EntryState::Uncommitted(EntryStatus::Expired { .. })) => {}
                (Some(_), s) => panic!("an expired step changed: {s:?}"),
            }
            if let Some((since, count)) = flat_since {
                assert!(count >= 1.0, "the step was offered again before it expired");
                let now = reoffers();
                assert_eq!(now, count, "re-offered after it expired");
                if h >= from + 3_000 && since.elapsed() >= Duration::from_secs(30) {
                    return format!(
                        "{} heights; re-offers flat at {count} for {:?}",
                        h - from,
                        since.elapsed()
                    );
                }
            }
            assert!(Instant::now() < deadline, "only {} heights", h - from);
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// A validator stopped while the others commit more than 64 MiB of blocks
/// (registrations of about 3.2 MB each, which need only the registering
/// authority) catches up within 60 s of its restart.
#[test]
fn a_validator_stopped_for_64_mib_of_blocks_catches_up() {
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        max_block_entries: None,
        ..NodeSettings::default()
    };
    stopped_validator_catches_up(&settings, |t, w| {
        let admin = t.admin(w.sources[0].node).expect("admin");
        let mut digests = Vec::new();
        let mut bytes = 0;
        while bytes < 66 << 20 {
            let mut m = w.sources[0].manifest.clone();
            m.title = format!("large {}", digests.len());
            m.segmentation = provenance::manifest::Segmentation::Boundaries {
                offsets: (0..400_000).collect(),
            };
            bytes += provenance::codec::encode(&m).len();
            // Over the authority's pending cap (64 MiB) the node answers
            // 429: wait for some to commit, as any client would.
            let mut full = 0;
            let d = loop {
                match admin.submit("/v1/sources", &m) {
                    Err(ClientError::Status {
                        status: 429, body, ..
                    }) => {
                        assert!(body.contains("pending"), "{body}");
                        full += 1;
                        assert!(full < 600, "still over the cap after 5 min: {body}");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    r => break r.expect("accepted").digest,
                }
            };
            digests.push(d);
        }
        if let Err(e) = admin.wait_committed(&digests, Duration::from_secs(300)) {
            t.dump_log_tails(20);
            panic!("registrations not committed: {e}");
        }
        format!("{} registrations, {} MiB", digests.len(), bytes >> 20)
    });
}
