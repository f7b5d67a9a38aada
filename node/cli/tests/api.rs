//! The API under hostile clients, against a live 4-process testnet: a
//! write is authorised before its body is read (64 unauthenticated 32 MiB
//! uploads at once cost the node less than 64 MiB), every 4xx is a JSON
//! reason (the framework's rejections and 405s included), and listings page
//! with a cursor under one checkpoint, which `govtune verify source`
//! follows to the end; `metrics_listen` moves `/metrics` off the API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use provenance::api::{ErrorBody, ListingAnswer, ListingQuery, MAX_LISTING_ENTRIES};
use testnet::workload::Workload;
use testnet::{NodeSettings, Testnet};

const MACBETH: &[u8] = include_bytes!("../../../testnet/fixtures/macbeth.txt");
const TWELFTH_NIGHT: &[u8] = include_bytes!("../../../testnet/fixtures/twelfth_night.txt");

fn rss(pid: u32) -> u64 {
    testnet::runner::resident_bytes(pid).expect("the node's resident memory")
}

/// Sends one raw HTTP/1.1 request (headers, then up to `body_len` bytes of
/// body, stopping when the server closes) and returns the status and body.
fn raw(addr: &str, head: &str, body_len: usize) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("headers");
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line {status:?}"));
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn json_reason(what: &str, (code, body): (u16, String), want: u16) {
    assert_eq!(code, want, "{what}: {body}");
    let e: ErrorBody =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    assert!(!e.error.is_empty(), "{what}: empty reason");
}

#[test]
fn the_api_authorises_before_reading_answers_json_and_pages_listings() {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = NodeSettings {
        view_timeout_ms: Some(1500),
        heartbeat_ms: Some(300),
        ..NodeSettings::default()
    };
    let mut t =
        Testnet::create(dir.path(), 4, Path::new(env!("CARGO_BIN_EXE_govtune")), &settings).expect("testnet");
    // The operator's node serves /metrics on its own address.
    let op_i = t.by_role("operator").expect("op");
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").to_string()
    };
    let mut cfg = std::fs::read_to_string(&t.nodes[op_i].config).expect("config");
    cfg.push_str(&format!("metrics_listen = \"{metrics_addr}\"\n"));
    std::fs::write(&t.nodes[op_i].config, cfg).expect("config");
    t.start_all().expect("start");
    t.wait_all_healthy(Duration::from_secs(120)).expect("healthy");
    let op_addr = t.nodes[op_i].api.clone();
    let pid = t.nodes[op_i].pid.expect("pid");

    // 64 unauthenticated 32 MiB uploads at once: each refused with 401
    // before its body is read.
    let before = rss(pid);
    let digest = "0".repeat(64);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(8);
            while Instant::now() < end {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let uploads: Vec<_> = (0..64)
        .map(|_| {
            let addr = op_addr.clone();
            let head = format!(
                "PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                32 << 20
            );
            std::thread::spawn(move || raw(&addr, &head, 32 << 20))
        })
        .collect();
    for u in uploads {
        json_reason("unauthenticated upload", u.join().expect("upload"), 401);
    }
    sampling.join().expect("sampler");
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    println!(
        "64 unauthenticated 32 MiB uploads: the node grew by {} MiB",
        grew >> 20
    );
    assert!(grew < 64 << 20, "the node grew by {} MiB", grew >> 20);

    // A bad body without a token: 401, not 400 (the token comes first).
    let bad = "{not json";
    json_reason(
        "unauthenticated bad body",
        raw(
            &op_addr,
            &format!(
                "POST /v1/campaigns HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{bad}",
                bad.len()
            ),
            0,
        ),
        401,
    );
    // Every 4xx is a JSON reason.
    let get = |path: &str| {
        raw(
            &op_addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            0,
        )
    };
    json_reason("bad query", get("/v1/log/leaves?start=x&end=1"), 400);
    json_reason("bad path", get("/v1/sources/not-a-digest"), 400);
    json_reason("unknown endpoint", get("/v1/nothing-here"), 404);
    json_reason("metrics moved to their own address", get("/metrics"), 404);
    let (code, text) = raw(
        &metrics_addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        0,
    );
    assert_eq!(code, 200);
    assert!(text.contains("govtune_height"), "{text}");
    json_reason(
        "wrong method",
        raw(
            &op_addr,
            "DELETE /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            0,
        ),
        405,
    );
    json_reason(
        "bad listing cursor",
        get(&format!("/v1/sources/{digest}/entries?after=-1")),
        400,
    );

    // Audit material: the operator's token only, bodies checked, every
    // refusal a JSON reason.
    let campaign = "ab".repeat(32);
    let context = format!("/v1/audit/{campaign}/context");
    json_reason(
        "unauthenticated audit material",
        raw(
            &op_addr,
            &format!(
                "PUT {context} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nGTAC"
            ),
            0,
        ),
        401,
    );
    let op_admin = t.admin(op_i).expect("admin");
    let status = |r: Result<(), lightclient::client::ClientError>| match r {
        Err(lightclient::client::ClientError::Status { status, .. }) => status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status(op_admin.put_bytes(&context, b"not a context")), 400);
    let material = tuner::material::AuditMaterial {
        seq: 3,
        opt_before: tuner::optim::AdamW::new(
            tuner::optim::AdamWConfig {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            [2usize],
        ),
        windows: vec![b"abc".to_vec()],
        salts: Default::default(),
    };
    assert_eq!(
        status(op_admin.put_bytes(&format!("/v1/audit/{campaign}/records/4"), &material.to_bytes())),
        400,
        "the material of record 3 under record 4"
    );
    op_admin
        .put_bytes(&format!("/v1/audit/{campaign}/records/3"), &material.to_bytes())
        .expect("the operator's material is taken");
    let gov_i = t.by_role("governance").expect("governance");
    assert_eq!(
        status(
            t.admin(gov_i)
                .expect("admin")
                .put_bytes(&format!("/v1/audit/{campaign}/records/3"), &material.to_bytes())
        ),
        403,
        "a governance node takes no audit material"
    );

    // Listings page: more entries name a source than one page holds.
    let mut w =
        Workload::new(&t, &[("Macbeth", MACBETH), ("Twelfth Night", TWELFTH_NIGHT)]).expect("workload");
    w.register(&t).expect("register");
    let op = t.admin(op_i).expect("admin");
    let mut last = None;
    for _ in 0..MAX_LISTING_ENTRIES + 8 {
        let e = w.next_event(2, false).expect("event");
        last = Some(op.submit_event(&e).expect("accepted").digest);
    }
    op.wait_committed(&[last.expect("some")], Duration::from_secs(120))
        .expect("committed");
    let source = w.sources[0].manifest.source_id();
    let path = format!("/v1/sources/{}/entries", source.to_hex());
    let client = t.client(op_i);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first: ListingAnswer = loop {
        let a: ListingAnswer = client.get_json(&path).expect("listing");
        if a.uncertified == 0 || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(first.entries.len(), MAX_LISTING_ENTRIES);
    let after = first.next.expect("a next page");
    assert_eq!(Some(after), first.entries.last().map(|c| c.index));
    let q = ListingQuery {
        after: Some(after),
        height: Some(first.checkpoint.height),
    };
    let second: ListingAnswer = client
        .get_json(&format!("{path}?{}", q.to_query()))
        .expect("second page");
    assert_eq!(
        second.checkpoint, first.checkpoint,
        "one checkpoint for every page"
    );
    assert!(second.entries.iter().all(|c| c.index > after));
    assert_eq!(second.next, None);
    let listed = first.entries.len() + second.entries.len();
    // The manifest and every step (each names both sources).
    assert!(listed > MAX_LISTING_ENTRIES + 1, "{listed}");

    // A client that accepts gzip gets the listing compressed (about half
    // its JSON, which is mostly hex); one that does not gets it plain.
    let api_addr = t.nodes[op_i].api.clone();
    let mut s = TcpStream::connect(&api_addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br, gzip;q=0.8\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answer");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("content-encoding: gzip"),
        "{head}"
    );
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&answer[split + 4..])
        .read_to_string(&mut plain)
        .expect("gunzip");
    let unzipped: ListingAnswer = serde_json::from_str(&plain).expect("a listing");
    assert_eq!(unzipped.entries.len(), MAX_LISTING_ENTRIES);
    assert!(
        (answer.len() - split) * 2 < plain.len() * 3 / 2,
        "compressed {} of {}",
        answer.len() - split,
        plain.len()
    );
    let (code, body) = raw(
        &api_addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        0,
    );
    assert_eq!(code, 200);
    let unpacked: ListingAnswer = serde_json::from_str(&body).expect("a plain listing");
    assert_eq!(unpacked.entries.len(), MAX_LISTING_ENTRIES);

    // The light client follows the cursor to the end.
    let g = t.genesis_path();
    let api = t.nodes[op_i].api.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_govtune"))
        .args([
            "verify",
            "--genesis",
            g.to_str().expect("utf8"),
            "--node",
            &api,
            "source",
            "--id",
            &source.to_hex(),
        ])
        .output()
        .expect("verify runs");
    // Every page read and proved: the one failure left is the campaign
    // being open (the test never closes it), a verdict, not an error.
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = text.lines().filter(|l| l.contains('✗')).collect();
    assert!(
        text.contains("entries verified") && failed.len() == 1 && failed[0].contains("is not closed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "a FAIL verdict");
}
