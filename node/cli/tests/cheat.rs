//! A cheating operator on a 4-process testnet (the tuner's test-only
//! `cheat` feature, `GOVTUNE_CHEAT=<mode>`): after two honest steps it
//! ships one dishonest record (`own_seed`: every record is drawn from its
//! own order, so the first), and a co-signer refuses it with the specific
//! reason; nothing of it is committed on any node, the refusal is on
//! `/v1/events/{digest}`, and the campaign stops at its last honest record.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lightclient::verify::Verifier;
use provenance::api::{EntryState, EntryStatus};
use provenance::Digest;
use testnet::{NodeSettings, Testnet};

/// The demo's campaign file cut to 6 steps, with `edit` applied, written
/// into `dir`.
fn campaign_file(dir: &Path, edit: &dyn Fn(String) -> String) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    testnet::campaign::short_campaign(&data, dir, 6, |t| {
        edit(t.replace("checkpoint_every = 50", "checkpoint_every = 3"))
    })
    .expect("campaign file")
}

/// What stopped a cheating campaign: the refusing authority, the refused
/// entry, the reason, and the campaign.
struct Stopped {
    by: String,
    digest: Digest,
    reason: String,
    campaign: Digest,
}

/// Runs the campaign file `config` on the testnet in `net` with
/// `GOVTUNE_CHEAT=mode` from step 2, which must stop it with a co-signer's
/// refusal (`<authority> refused entry <digest>: <reason>`).
fn run_cheating(bin: &Path, config: &Path, net: &Path, mode: &str) -> Stopped {
    let out = Command::new(bin)
        .args(["campaign", "run", "--config"])
        .arg(config)
        .arg("--testnet")
        .arg(net)
        .env("GOVTUNE_CHEAT", mode)
        .env("GOVTUNE_CHEAT_STEP", "2")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{mode} stops the campaign:\n{stdout}\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains(" refused entry "))
        .unwrap_or_else(|| panic!("no refusal in:\n{stderr}"));
    let (head, tail) = line.split_once(" refused entry ").expect("refusal line");
    let campaign = stdout
        .lines()
        .find_map(|l| l.strip_prefix("campaign ").filter(|d| d.len() == 64))
        .and_then(|d| Digest::from_hex(d).ok())
        .expect("campaign digest");
    Stopped {
        by: head
            .rsplit(' ')
            .next()
            .expect("the refusing authority")
            .to_string(),
        digest: tail
            .get(..64)
            .and_then(|h| Digest::from_hex(h).ok())
            .expect("the refused entry's digest"),
        reason: tail.get(66..).unwrap_or_default().to_string(),
        campaign,
    }
}

/// Runs the demo's campaign file, cut to 6 steps (with `edit` applied),
/// with `GOVTUNE_CHEAT=mode`, checks what every cheat must show, and
/// returns the refusing authority, its reason and the campaign's committed
/// records (the same on every node).
fn cheat(mode: &str, edit: &dyn Fn(String) -> String) -> (String, String, u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        ..NodeSettings::default()
    };
    let mut t = Testnet::create(&dir.path().join("net"), 4, bin, &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let config = campaign_file(dir.path(), edit);
    let Stopped {
        by,
        digest,
        reason,
        campaign,
    } = run_cheating(bin, &config, &dir.path().join("net"), mode);
    assert_ne!(by, "tuning-lab", "a co-signer refused, not the operator");
    // The refusal is on /v1/events/{digest}, at the operator's node.
    let op = t.by_role("operator").expect("operator");
    match t.client(op).status(&digest).expect("status").state {
        EntryState::Uncommitted(EntryStatus::Refused { by: b, reason: r }) => {
            assert_eq!(b.as_str(), by);
            assert!(reason.contains(&r) || r.contains(&reason), "{r} / {reason}");
        }
        other => panic!("the cheating step is {other:?}"),
    }
    // Nothing of it is committed anywhere; every node holds the same
    // honest records.
    std::thread::sleep(Duration::from_secs(2));
    let entries = t.client(op).campaign(&campaign).expect("campaign").entries;
    for i in 0..t.nodes.len() {
        let c = t.client(i);
        match c.status(&digest) {
            Ok(a) => assert!(
                a.state.committed().is_none(),
                "node {i} committed the cheating step"
            ),
            Err(e) => assert!(e.to_string().contains("404"), "node {i}: {e}"),
        }
        assert_eq!(
            c.campaign(&campaign).expect("campaign").entries,
            entries,
            "node {i}"
        );
    }
    t.down().expect("down");
    (by, reason, entries)
}

fn same(s: String) -> String {
    s
}

#[test]
fn cheat_update_routed_out_piece() {
    // Every source of class "letters" (depth 1): the first layers are
    // routed out of every step.
    let (by, reason, entries) = cheat("routed_out", &|s| {
        s.replace(
            "data_class = \"literary\", not_before",
            "data_class = \"letters\", not_before",
        )
    });
    assert_eq!(entries, 2, "the two honest steps");
    assert!(
        reason.contains("effect: the delta changes")
            && reason.contains("which no admitted example of the event is routed to"),
        "{by}: {reason}"
    );
}

#[test]
fn cheat_under_report_norm() {
    let (by, reason, entries) = cheat("under_norm", &same);
    assert_eq!(entries, 2, "the two honest steps");
    assert!(
        reason.contains("effect: block") && reason.contains("norm"),
        "{by}: {reason}"
    );
}

#[test]
fn cheat_reoffer_old_step_under_new_link() {
    let (by, reason, entries) = cheat("replay", &same);
    assert_eq!(entries, 2, "the two honest steps");
    // The old step draws positions already settled: the order check (run
    // before the effect check) names it.
    assert!(
        reason.contains("order: span 16..32: reaches behind position 32, already settled"),
        "{by}: {reason}"
    );
}

#[test]
fn cheat_unrolled_memorisation() {
    let (by, reason, entries) = cheat("memorisation", &same);
    assert_eq!(entries, 2, "the two honest steps");
    assert_eq!(by, "standards-board");
    assert!(reason.contains("must be rolled back and refused"), "{reason}");
}

#[test]
fn cheat_skip_considered_example() {
    let (by, reason, entries) = cheat("skip", &same);
    assert_eq!(entries, 2, "the two honest steps");
    assert!(
        reason.starts_with("order: example")
            && reason.contains("was skipped: admissible, and neither trained nor refused"),
        "{by}: {reason}"
    );
}

/// One source's license is not admissible: its examples are refused and
/// counted in an aggregate after each step.
fn refused_license(s: String) -> String {
    s.replace(
        "title = \"comedy_of_errors\", license = \"CC0-1.0\"",
        "title = \"comedy_of_errors\", license = \"CC-BY-NC-4.0\"",
    )
}

#[test]
fn cheat_inflate_refusal_aggregate() {
    let (by, reason, entries) = cheat("inflate", &refused_license);
    assert_eq!(by, "standards-board", "governance recounts aggregates");
    assert!(
        entries >= 3,
        "honest steps and aggregates before the cheat: {entries}"
    );
    assert!(
        reason.starts_with("order: aggregate over positions") && reason.contains("the order has"),
        "{reason}"
    );
}

#[test]
fn cheat_own_seed_order() {
    let (by, reason, entries) = cheat("own_seed", &same);
    assert_eq!(entries, 0, "refused on its first record");
    assert!(reason.starts_with("order: "), "{by}: {reason}");
}

/// The whole consortium colludes (test-only: co-signing checks and state
/// rules off), so an operator's skipped example and inflated aggregate
/// both commit; the verifiers, recomputing the order from the log, name
/// them: the rights-holder's predicate the example, the regulator's the
/// aggregate.
#[test]
fn collusion_lets_a_skip_and_an_inflated_aggregate_commit_and_the_predicates_name_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        collude: ["globe-press", "folio-society", "standards-board", "tuning-lab"]
            .map(String::from)
            .to_vec(),
        ..NodeSettings::default()
    };
    let net = dir.path().join("net");
    let mut t = Testnet::create(&net, 4, bin, &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let config = campaign_file(dir.path(), &refused_license);
    let out = Command::new(bin)
        .args(["campaign", "run", "--config"])
        .arg(&config)
        .arg("--testnet")
        .arg(&net)
        .env("GOVTUNE_CHEAT", "skip,inflate")
        .env("GOVTUNE_CHEAT_STEP", "2")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "colluders commit every record:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let campaign = stdout
        .lines()
        .find_map(|l| l.strip_prefix("campaign ").filter(|d| d.len() == 64))
        .and_then(|d| Digest::from_hex(d).ok())
        .expect("campaign digest");
    // Wait until a checkpoint covers the close.
    let reader = t.client(0);
    for _ in 0..300 {
        let size = reader.health().expect("health").log_size;
        if reader.checkpoint(None).is_ok_and(|c| c.size >= size)
            && reader.campaign(&campaign).is_ok_and(|c| c.closed.is_some())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let genesis = t.genesis_path();
    let mut v = Verifier::new(&genesis, t.client(0)).expect("verifier");
    let vc = v.campaign(&campaign).expect("the record verifies");
    assert!(vc.record.is_some(), "closed");

    // The regulator: the aggregate is named, with both counts.
    let verdict = v
        .policy(&campaign, &vc.campaign.policy)
        .expect("policy predicate");
    assert!(!verdict.pass);
    assert!(
        verdict.violations.iter().any(|m| m
            .contains("breaks the campaign's data order: aggregate over positions")
            && m.contains("the order has")),
        "{:#?}",
        verdict.violations
    );

    // The rights-holder of the skipped example: its predicate names it,
    // and no event of the campaign trained it.
    let mut sources: Vec<Digest> = vc
        .chain
        .iter()
        .filter_map(|b| b.event())
        .flat_map(|e| e.records.iter().map(|r| r.source))
        .collect();
    sources.sort();
    sources.dedup();
    let mut named = Vec::new();
    for s in &sources {
        let verdict = v.source_and_order(s, false).expect("source predicate");
        assert!(!verdict.pass, "every source's order is broken from the skip on");
        for m in &verdict.violations {
            if let Some(rest) = m.split(" drew example ").nth(1) {
                let index: u64 = rest
                    .split(' ')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .expect("index");
                assert!(m.contains("neither trained nor refused it"), "{m}");
                named.push((*s, index));
            }
        }
    }
    assert_eq!(named.len(), 1, "exactly one example is named skipped: {named:?}");
    let trained = vc
        .chain
        .iter()
        .filter_map(|b| b.event())
        .flat_map(|e| e.records.iter().map(|r| (r.source, r.index)))
        .any(|x| x == named[0]);
    assert!(!trained, "the named example was indeed never trained");
    t.down().expect("down");
}

/// The demo's policy with replay audits at rate 1 (every co-signer's
/// ticket selects every training record) and a clip norm that binds.
fn audited(s: String) -> String {
    s.replace("clip_norm = 1.0", "clip_norm = 0.001")
        .replace("clip_norm = 0.5", "clip_norm = 0.001")
        .replace(
        "signature_scheme = \"bls12381\"\n",
        "signature_scheme = \"bls12381\"\n\n[policy.audit]\nrate_millionths = 1000000\nexample_tolerance = 0.004\n",
    )
}

/// Asks the operator's node for `campaign`'s audit context over the p2p
/// channel, as node `who` of the testnet (with its genesis keys, beside the
/// running node): the bytes served, if any.
fn ask_audit_context(t: &Testnet, who: usize, campaign: Digest) -> Option<Vec<u8>> {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let (g, keyring) = genesis::load_genesis(&t.genesis_path()).expect("genesis");
    let keys = genesis::load_node_keys(
        &t.dir.join("nodes").join(&t.nodes[who].name).join("node.key"),
        &g,
        &keyring,
    )
    .expect("node keys");
    let op = t.by_role("operator").expect("operator");
    let peer: libp2p::PeerId = g.nodes[op].peer_id.parse().expect("peer id");
    let addr: libp2p::Multiaddr = g.nodes[op].p2p_listen.parse().expect("addr");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut secret = keys.node_secret;
        let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).expect("key");
        let mut swarm = node::p2p::build_swarm(key, &[peer]).expect("swarm");
        swarm.dial(addr).expect("dial");
        let request = node::wire::Request::Audit {
            campaign,
            part: node::inbox::AuditPart::Context,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .expect("the operator's node accepts the connection");
            if matches!(ev, SwarmEvent::ConnectionEstablished { .. }) {
                break;
            }
        }
        let id = swarm
            .behaviour_mut()
            .rpc
            .send_request(&peer, provenance::Bytes(node::wire::to_bytes(&request)));
        loop {
            let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .expect("the operator's node answers");
            if let SwarmEvent::Behaviour(node::p2p::BehaviourEvent::Rpc(
                libp2p::request_response::Event::Message {
                    message: libp2p::request_response::Message::Response { request_id, response },
                    ..
                },
            )) = &ev
            {
                assert_eq!(*request_id, id);
                match node::wire::from_bytes::<node::wire::Response>("response", &response.0)
                    .expect("decodes")
                {
                    node::wire::Response::Audit(b) => return b.map(|b| b.0),
                    other => panic!("answered {other:?}"),
                }
            }
            if let SwarmEvent::Behaviour(node::p2p::BehaviourEvent::Rpc(
                libp2p::request_response::Event::OutboundFailure { error, .. },
            )) = &ev
            {
                panic!("the request failed: {error}");
            }
        }
    })
}

#[test]
fn replay_audit_at_rate_1_each_replay_only_cheat_is_refused_on_the_testnet_by_a_named_co_signer() {
    let dir = tempfile::tempdir().expect("tmp");
    let bin = Path::new(env!("CARGO_BIN_EXE_govtune"));
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        ..NodeSettings::default()
    };
    let net = dir.path().join("net");
    let mut t = Testnet::create(&net, 4, bin, &settings).expect("testnet");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let config = campaign_file(dir.path(), &audited);
    let op = t.by_role("operator").expect("operator");
    let gov = t.by_role("governance").expect("governance");
    let mut last = None;
    for (mode, may_refuse) in [
        ("no_clip", &["standards-board"][..]),
        (
            "forge_sketch",
            &["standards-board", "globe-press", "folio-society"][..],
        ),
        ("hide_signal", &["standards-board"][..]),
    ] {
        let Stopped {
            by,
            digest,
            reason,
            campaign,
        } = run_cheating(bin, &config, &net, mode);
        assert!(
            may_refuse.contains(&by.as_str()),
            "{mode}: refused by {by}: {reason}"
        );
        assert!(
            reason.starts_with("replay audit: "),
            "{mode}: refused by the replay: {reason}"
        );
        // The two honest records, replayed by every co-signer, committed;
        // the cheating one nowhere.
        let entries = t.client(op).campaign(&campaign).expect("campaign").entries;
        assert_eq!(entries, 2, "{mode}: the honest records before the cheat");
        for i in 0..t.nodes.len() {
            if let Ok(a) = t.client(i).status(&digest) {
                assert!(
                    a.state.committed().is_none(),
                    "{mode}: node {i} committed the cheat"
                );
            }
        }
        // The auditor's evidence is committed: the refused record, the
        // operator's signature of it, the selecting ticket, the reason.
        let mut v = Verifier::new(&t.genesis_path(), t.client(gov)).expect("verifier");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let evidence = loop {
            let cp = v.latest().expect("checkpoint");
            let found = v
                .scan(&cp)
                .expect("log")
                .into_iter()
                .find_map(|(_, e)| match e.body {
                    provenance::EntryBody::AuditFailure(f) if f.record.digest() == digest => Some(f),
                    _ => None,
                });
            if let Some(f) = found {
                break f;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: no evidence committed"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(
            evidence.auditor.as_str(),
            by,
            "{mode}: the refusing auditor's evidence"
        );
        // The refusing node counts its failed replay.
        let refuser = t
            .nodes
            .iter()
            .position(|n| n.authority == by)
            .expect("the refusing authority's node");
        let metrics = t.client(refuser).metrics().expect("metrics");
        assert!(
            metrics.lines().any(|l| l
                .strip_prefix("govtune_replays_failed_total ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n >= 1)),
            "{mode}: {metrics}"
        );
        assert!(
            reason.contains(&evidence.reason),
            "{mode}: {} / {reason}",
            evidence.reason
        );
        // A light client finds every selected record replayed.
        let verdict = v.audits(&campaign, true).expect("audits");
        assert!(verdict.pass, "{mode}: {}", verdict.render());
        assert!(
            verdict
                .notes
                .iter()
                .any(|n| n == "standards-board: audits 2 records, 2 tickets, 2 selected, 2 replayed"),
            "{mode}: {}",
            verdict.render()
        );
        // Every replay's digest is that of the quantities the record states
        // (governance's two, and each data source's with examples there).
        let replayed: u64 = verdict
            .notes
            .iter()
            .filter_map(|n| {
                n.strip_suffix(" replayed")?
                    .rsplit(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert!(replayed >= 2, "{mode}: {}", verdict.render());
        assert!(
            verdict.notes.iter().any(|n| *n
                == format!(
                    "{replayed} replay digests recomputed from the records' measurements and sketch blobs"
                )),
            "{mode}: {}",
            verdict.render()
        );
        last = Some((campaign, v));
    }
    let (campaign, mut v) = last.expect("a campaign ran");
    // One missing audit record fails the verifier's check, naming the
    // auditor whose audit is gone.
    let (_, listed) = v
        .listing(
            &format!("/v1/campaigns/{}/entries", campaign.to_hex()),
            provenance::index::IndexKey::Campaign(campaign),
        )
        .expect("listing");
    let mut record = listed
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e.body.event().is_some())
        .expect("a training record");
    let mut tally = lightclient::verify::AuditTally::default();
    assert!(tally
        .add(v.light().keyring(), v.view(), &record)
        .expect("tally")
        .is_empty());
    // A replay digest other than that of the stated quantities is found
    // by recomputing it (and its signature no longer verifies).
    let mut forged = record.clone();
    let who = forged.audits[0].ticket.authority.clone();
    if let Some(r) = forged.audits[0].replay.as_mut() {
        r.digest = Digest([7; 32]);
    }
    let keyring = v.light().keyring().clone();
    let role = |a: &provenance::AuthorityId| keyring.authority(a).ok().map(|k| k.role);
    let owner = |s: &Digest| {
        use provenance::LedgerView;
        v.view().source(s).map(|m| m.authority.clone())
    };
    let recomputed =
        lightclient::recompute::replay_digests(v.node(), &forged, &role, &owner).expect("recomputed");
    assert!(
        recomputed
            .iter()
            .any(|(a, recorded, found)| *a == who && recorded != found),
        "{recomputed:?}"
    );
    assert!(recomputed
        .iter()
        .filter(|(a, _, _)| *a != who)
        .all(|(_, recorded, found)| recorded == found));
    assert!(!lightclient::verify::AuditTally::default()
        .add(v.light().keyring(), v.view(), &forged)
        .expect("tally")
        .is_empty());
    let gone = record.audits.remove(0);
    let faults = tally.add(v.light().keyring(), v.view(), &record).expect("tally");
    assert!(!tally.holds());
    assert!(
        faults.iter().any(|f| matches!(
            f,
            provenance::audit::AuditFault::Missing { authority } if *authority == gone.ticket.authority
        )),
        "{faults:?}"
    );
    // The batches and canaries reach governance alone: a data-source
    // member asking the operator's node gets nothing, governance gets the
    // audit context the recipe commits.
    let ds = t.by_role("data-source").expect("data source");
    assert_eq!(
        ask_audit_context(&t, ds, campaign),
        None,
        "a data source got the canaries"
    );
    let context = ask_audit_context(&t, gov, campaign).expect("governance is served");
    tuner::material::AuditContext::from_bytes(&context).expect("an audit context");
    t.down().expect("down");
}
