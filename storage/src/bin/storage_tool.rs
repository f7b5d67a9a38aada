//! `storage-tool`: drives a store from outside the test process.
//!
//! * `crash-writer DIR SEED` appends synthetic blocks forever, certifying a
//!   checkpoint after each, and prints `acked HEIGHT SIZE ROOT` once each
//!   block is durable. The crash test SIGKILLs it at random moments.
//! * `replay DIR` prints the digest of the ledger state rebuilt by replaying
//!   the store's log, and the digest of the persisted state.
//! * `bench [EVENTS] [DIR]` prints the storage benchmark's figures.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use provenance::{Canonical, Timestamp};
use rand::{Rng, SeedableRng};
use storage::synthetic::{certify, consortium, Workload, ORIGIN};
use storage::{replay_state, Store};

fn crash_writer(dir: &Path, seed: u64) -> Result<(), String> {
    let (dealt, signers) = consortium();
    let mut store = Store::open(dir, ORIGIN, &dealt.keyring).map_err(|e| e.to_string())?;
    let mut work = Workload::resume(seed, store.state());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ store.head().height);
    let out = std::io::stdout();
    loop {
        let entries = if store.head().height == 0 {
            work.setup_entries()
        } else {
            let n = rng.gen_range(1..40);
            work.next_events(n)
        };
        let stamp = Timestamp(store.head().stamp.0 + 1);
        let header = store.next_header(&entries, stamp, store.head().height + 1, 0);
        let r = store
            .append_block(&header, &entries, b"synthetic-certificate")
            .map_err(|e| e.to_string())?;
        certify(&mut store, &dealt, &signers).map_err(|e| e.to_string())?;
        let mut o = out.lock();
        writeln!(o, "acked {} {} {}", r.height, r.log_size, r.root).map_err(|e| e.to_string())?;
        o.flush().map_err(|e| e.to_string())?;
    }
}

fn replay(dir: &Path) -> Result<(), String> {
    let (dealt, _) = consortium();
    let store = Store::open(dir, ORIGIN, &dealt.keyring).map_err(|e| e.to_string())?;
    let replayed = replay_state(&store).map_err(|e| e.to_string())?;
    println!("replayed {}", replayed.digest());
    println!("persisted {}", store.state().digest());
    Ok(())
}

fn bench(events: u64, dir: &Path) -> Result<(), String> {
    let e = |e: storage::StoreError| e.to_string();
    let (dealt, signers) = consortium();
    let path = dir.join("bench-store");
    let raw_path = dir.join("bench-raw");
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_dir_all(&raw_path);
    let mut work = Workload::new(42);
    let block = 1000usize;
    let blocks: Vec<Vec<provenance::LedgerEntry>> = {
        let mut v = vec![work.setup_entries()];
        let mut left = events;
        while left > 0 {
            let n = left.min(block as u64) as usize;
            v.push(work.next_events(n));
            left -= n as u64;
        }
        v
    };
    let payload: u64 = blocks.iter().flatten().map(|e| e.encode().len() as u64).sum();

    // Ours: full append (state, tree nodes, indexes, synced batch per block).
    let mut store = Store::open(&path, ORIGIN, &dealt.keyring).map_err(e)?;
    let t = Instant::now();
    for (i, entries) in blocks.iter().enumerate() {
        let header = store.next_header(entries, Timestamp(i as u64 + 1), i as u64, 0);
        store.append_block(&header, entries, b"bench").map_err(e)?;
    }
    let append = t.elapsed().as_secs_f64();
    certify(&mut store, &dealt, &signers).map_err(|e| e.to_string())?;

    // The raw primitive: the same entry bytes, one synced RocksDB batch per
    // block, no tree, no indexes, no state.
    let raw = rocksdb::DB::open_default(&raw_path).map_err(|e| e.to_string())?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let t = Instant::now();
    let mut idx = 0u64;
    for entries in &blocks {
        let mut b = rocksdb::WriteBatch::default();
        for en in entries {
            b.put(idx.to_be_bytes(), en.encode());
            idx += 1;
        }
        raw.write_opt(b, &wo).map_err(|e| e.to_string())?;
    }
    let raw_secs = t.elapsed().as_secs_f64();
    drop(raw);

    let n = store.head().log_size;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let samples = 2000;
    let t = Instant::now();
    for _ in 0..samples {
        let i = rng.gen_range(0..n);
        store.inclusion_proof(i, n).map_err(e)?.ok_or("no proof")?;
    }
    let incl = t.elapsed().as_secs_f64() / samples as f64;
    let t = Instant::now();
    for _ in 0..samples {
        let a = rng.gen_range(1..n);
        store.consistency_proof(a, n).map_err(e)?.ok_or("no proof")?;
    }
    let cons = t.elapsed().as_secs_f64() / samples as f64;
    let ix = index_figures(&store, &work, n, samples).map_err(e)?;
    store.flush().map_err(e)?;
    let disk = dir_size(&path);
    drop(store);
    let t = Instant::now();
    let reopened = Store::open(&path, ORIGIN, &dealt.keyring).map_err(e)?;
    let open = t.elapsed().as_secs_f64();
    assert_eq!(reopened.head().log_size, n);

    println!("storage benchmark: {n} entries in {}-entry blocks", block);
    println!(
        "  append (ours)            {:>10.0} events/s  ({append:.2} s)",
        n as f64 / append
    );
    println!(
        "  append (raw rocksdb)     {:>10.0} events/s  ({raw_secs:.2} s, same bytes, no tree/index/state)",
        n as f64 / raw_secs
    );
    println!("  ours / raw time          {:>10.2}x", append / raw_secs);
    println!("  inclusion proof at {n}   {:>10.1} µs", incl * 1e6);
    println!("  consistency proof at {n} {:>10.1} µs", cons * 1e6);
    println!(
        "  canonical entry bytes    {:>10.0} B/event",
        payload as f64 / n as f64
    );
    println!(
        "  on disk                  {:>10.0} B/event  ({:.1} MiB)",
        disk as f64 / n as f64,
        disk as f64 / 1048576.0
    );
    println!("  open + recovery          {:>10.1} ms", open * 1e3);
    println!(
        "  index proof at {n}       {:>10.1} µs  ({:.1} siblings, {:.0} B as JSON)",
        ix.proof_secs * 1e6,
        ix.siblings,
        ix.proof_json
    );
    println!(
        "  a source's listing       {:>10} entries, {:.1} s to cite from disk",
        ix.entries, ix.listing_secs
    );
    println!(
        "    as the API's JSON      {:>10.0} B/entry  ({:.1} MiB, index proofs and pages included)",
        ix.json as f64 / ix.entries as f64,
        ix.json as f64 / 1048576.0
    );
    println!(
        "    the same, gzip         {:>10.0} B/entry  (as the node sends it to a client that accepts gzip)",
        ix.gzip as f64 / ix.entries as f64
    );
    println!(
        "    as canonical bytes     {:>10.0} B/entry  (leaf and audit path)",
        ix.binary as f64 / ix.entries as f64
    );
    println!(
        "    budget                 {:>10.0} B/entry  (2 x its own records' {:.0} B + 2 KiB)",
        ix.budget as f64 / ix.entries as f64,
        ix.own as f64 / ix.entries as f64
    );
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_dir_all(&raw_path);
    Ok(())
}

/// What the authenticated index costs at the bench's size, and what a
/// rights-holder's listing of one source weighs.
struct IndexFigures {
    proof_secs: f64,
    siblings: f64,
    proof_json: f64,
    entries: u64,
    listing_secs: f64,
    json: u64,
    gzip: u64,
    binary: u64,
    own: u64,
    budget: u64,
}

fn index_figures(store: &Store, work: &Workload, n: u64, samples: usize) -> storage::Result<IndexFigures> {
    use provenance::api::{CitedEntry, IndexCitation, IndexPage, ListingAnswer};
    use provenance::index::{page_count, IndexKey};
    let keys: Vec<IndexKey> = work
        .sources
        .iter()
        .map(|m| IndexKey::Source(m.source_id()))
        .collect();
    let t = Instant::now();
    let (mut siblings, mut proof_json) = (0usize, 0usize);
    for k in 0..samples {
        let p = store.index_proof(&keys[k % keys.len()], n)?;
        siblings += p.siblings.len();
        proof_json += serde_json::to_vec(&p).map(|b| b.len()).unwrap_or(0);
    }
    let proof_secs = t.elapsed().as_secs_f64() / samples as f64;
    // Every entry naming source 0, cited as the API cites them, in pages of
    // 256 entries each with the index pages that hold them.
    let key = keys[0];
    let id = work.sources[0].source_id();
    let proof = store.index_proof(&key, n)?;
    let value = proof
        .verify(&key, &store.head().index_root)
        .ok()
        .flatten()
        .ok_or_else(|| storage::StoreError::Corrupt("source 0 is not in the index".into()))?;
    let cp = storage::synthetic::checkpoint_answer(store);
    let t = Instant::now();
    let (mut json, mut gzip, mut binary, mut own) = (0u64, 0u64, 0u64, 0u64);
    for page in 0..page_count(value.count) {
        let Some((positions, pp)) = store.index_page(&key, &value, page)? else {
            break;
        };
        let mut entries = Vec::new();
        for i in &positions {
            let leaf = store
                .entry_bytes(*i)?
                .ok_or_else(|| storage::StoreError::Corrupt(format!("entry {i} missing")))?;
            let path = store
                .inclusion_proof(*i, n)?
                .ok_or_else(|| storage::StoreError::Corrupt(format!("no proof of {i}")))?;
            let e: provenance::LedgerEntry = provenance::decode(&leaf)?;
            own += e
                .body
                .event()
                .map(|ev| {
                    ev.records
                        .iter()
                        .filter(|r| r.source == id)
                        .map(|r| provenance::codec::encode(r).len() as u64)
                        .sum()
                })
                .unwrap_or(0);
            binary += (leaf.len() + 32 * path.len()) as u64;
            entries.push(CitedEntry {
                index: *i,
                digest: e.body.digest(),
                leaf: hex::encode(&leaf),
                proof: path,
            });
        }
        let answer = ListingAnswer {
            checkpoint: cp.clone(),
            entries,
            uncertified: 0,
            next: None,
            index: Some(IndexCitation {
                proof: proof.clone(),
                pages: vec![IndexPage {
                    page,
                    positions,
                    proof: pp,
                }],
            }),
        };
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        json += bytes.len() as u64;
        gzip += gzipped_len(&bytes);
    }
    Ok(IndexFigures {
        proof_secs,
        siblings: siblings as f64 / samples as f64,
        proof_json: proof_json as f64 / samples as f64,
        entries: value.count,
        listing_secs: t.elapsed().as_secs_f64(),
        json,
        gzip,
        binary,
        own,
        budget: 2 * own + 2048 * value.count,
    })
}

/// The size of `bytes` gzip-compressed as the node's API compresses.
fn gzipped_len(bytes: &[u8]) -> u64 {
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes)
        .and_then(|()| z.finish())
        .map(|b| b.len() as u64)
        .unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["crash-writer", dir, seed] => match seed.parse() {
            Ok(seed) => crash_writer(Path::new(dir), seed),
            Err(_) => Err(format!("seed {seed:?} is not a number")),
        },
        ["replay", dir] => replay(Path::new(dir)),
        ["bench"] => bench(1_000_000, &std::env::temp_dir()),
        ["bench", n] => match n.parse() {
            Ok(n) => bench(n, &std::env::temp_dir()),
            Err(_) => Err(format!("{n:?} is not a number of events")),
        },
        ["bench", n, dir] => match n.parse() {
            Ok(n) => bench(n, &PathBuf::from(dir)),
            Err(_) => Err(format!("{n:?} is not a number of events")),
        },
        _ => Err("usage: storage-tool crash-writer DIR SEED | replay DIR | bench [EVENTS [DIR]]".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
