//! The store: proofs from disk, state replay in a fresh process, index
//! queries against a brute-force scan, refusals that change nothing,
//! recovery that refuses a disagreeing checkpoint, blobs checked on read,
//! export and import.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use provenance::checkpoint::Checkpoint;
use provenance::merkle::{verify_consistency, verify_inclusion, LogHasher, MemoryTree, TreeHasher};
use provenance::{Canonical, Digest, EntryBody, LedgerEntry, LedgerView, Timestamp};
use rand::{Rng, SeedableRng};
use storage::synthetic::Workload;
use storage::{import, replay_state, IndexPrefix, Store, StoreError};

/// A store with a random log: setup, then blocks of random sizes, a
/// revocation in the middle, checkpoints along the way.
fn random_store(path: &std::path::Path, seed: u64, blocks: usize) -> (Store, Vec<LedgerEntry>) {
    let (dealt, signers) = consortium();
    let mut store = Store::open(path, ORIGIN, &dealt.keyring).expect("open");
    let mut w = Workload::new(seed);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut all = w.setup_entries();
    append(&mut store, &all);
    for b in 0..blocks {
        let mut entries = w.next_events(rng.gen_range(1..60));
        if b == blocks / 2 {
            entries.push(w.revocation(3));
        }
        append(&mut store, &entries);
        all.extend(entries);
        if b % 5 == 0 {
            certify(&mut store, &dealt, &signers);
        }
    }
    (store, all)
}

#[test]
fn proofs_from_disk_match_an_in_memory_tree_at_every_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, all) = random_store(dir.path(), 1, 20);
    let mem = MemoryTree::<LogHasher>::from_leaves(
        all.iter()
            .map(|e| e.encode())
            .collect::<Vec<_>>()
            .iter()
            .map(Vec::as_slice),
    );
    let n = store.head().log_size;
    assert_eq!(n, all.len() as u64);
    assert_eq!(store.head().root, mem.root());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    for _ in 0..300 {
        let size = rng.gen_range(1..=n);
        let i = rng.gen_range(0..size);
        let root = store.root_at(size).expect("root");
        assert_eq!(Some(root), mem.root_at(size));
        let p = store.inclusion_proof(i, size).expect("read").expect("proof");
        assert_eq!(Some(p.clone()), mem.inclusion_proof(i, size));
        verify_inclusion::<LogHasher>(i, size, &mem.leaf_hash(i).expect("leaf"), &p, &root)
            .expect("verifies");
        let first = rng.gen_range(0..=size);
        let c = store
            .consistency_proof(first, size)
            .expect("read")
            .expect("proof");
        verify_consistency::<LogHasher>(first, size, &c, &mem.root_at(first).expect("r"), &root)
            .expect("consistent");
    }
    // Entries round trip and are found by body digest.
    for (i, e) in all.iter().enumerate().step_by(17) {
        assert_eq!(store.entry(i as u64).expect("read").as_ref(), Some(e));
        assert_eq!(store.index_of(&e.body.digest()).expect("read"), Some(i as u64));
    }
    // Each entry's block height, against a scan of the blocks.
    let mut by_scan = Vec::new();
    for h in 1..=store.head().height {
        let b = store.block(h).expect("read").expect("block");
        by_scan.extend(std::iter::repeat_n(h, b.header.entry_count as usize));
    }
    for (i, h) in by_scan.iter().enumerate() {
        assert_eq!(store.height_of(i as u64).expect("read"), Some(*h), "entry {i}");
    }
    assert_eq!(store.height_of(n).expect("read"), None);
}

#[test]
fn state_replayed_in_a_fresh_process_equals_the_live_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = random_store(dir.path(), 2, 30);
    let live = store.state().digest();
    assert_eq!(
        replay_state(&store).expect("replay").digest(),
        live,
        "in-process replay"
    );
    let revoked = store.state().revocations();
    assert_eq!(
        revoked.len(),
        1,
        "the revocation took effect at its block's stamp"
    );
    drop(store);
    let out = Command::new(env!("CARGO_BIN_EXE_storage-tool"))
        .arg("replay")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("replayed {live}")), "{text}");
    assert!(text.contains(&format!("persisted {live}")), "{text}");
}

#[test]
fn index_queries_equal_a_brute_force_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, all) = random_store(dir.path(), 3, 25);
    let state = store.state();
    let scan = |pred: &dyn Fn(&LedgerEntry) -> bool| -> Vec<u64> {
        all.iter()
            .enumerate()
            .filter(|(_, e)| pred(e))
            .map(|(i, _)| i as u64)
            .collect()
    };
    let w = Workload::new(3);
    let campaign = w.campaign.digest();
    let in_campaign = |e: &LedgerEntry| match &e.body {
        EntryBody::Campaign(c) => c.digest() == campaign,
        EntryBody::Step(s) => s.link.campaign == campaign,
        EntryBody::Refusal(r) => r.link.campaign == campaign,
        _ => false,
    };
    assert_eq!(
        store.query(&IndexPrefix::campaign(&campaign)).expect("q"),
        scan(&in_campaign)
    );
    for m in &w.sources {
        let s = m.source_id();
        let touches = |e: &LedgerEntry| match &e.body {
            EntryBody::Manifest(x) => x.source_id() == s,
            EntryBody::Step(x) => x.examples.iter().any(|r| r.source == s),
            EntryBody::Refusal(x) => x.examples.iter().any(|r| r.source == s),
            EntryBody::Revocation(x) => x.source == s,
            _ => false,
        };
        assert_eq!(store.query(&IndexPrefix::source(&s)).expect("q"), scan(&touches));
        for ex in [0u64, 7, 100, 511] {
            let hit = |e: &LedgerEntry| match &e.body {
                EntryBody::Step(x) => x.examples.iter().any(|r| r.source == s && r.index == ex),
                EntryBody::Refusal(x) => x.examples.iter().any(|r| r.source == s && r.index == ex),
                _ => false,
            };
            assert_eq!(store.query(&IndexPrefix::example(&s, ex)).expect("q"), scan(&hit));
        }
    }
    for block in 0..16u32 {
        let hit = |e: &LedgerEntry| matches!(&e.body, EntryBody::Step(x) if x.measurement.blocks.iter().any(|b| b.block == block));
        assert_eq!(
            store.query(&IndexPrefix::parameter_block(block)).expect("q"),
            scan(&hit)
        );
    }
    for a in ["globe-press", "folio-society", "standards-board", "tuning-lab"] {
        let hit = |e: &LedgerEntry| {
            e.body
                .signing_plan(state as &dyn LedgerView)
                .map(|p| p.requests.iter().any(|r| r.authority.as_str() == a))
                .unwrap_or(false)
        };
        let got = store.query(&IndexPrefix::authority(a)).expect("q");
        assert_eq!(got, scan(&hit), "{a}");
        assert!(!got.is_empty());
    }
}

/// At every certified checkpoint, every source's and the campaign's index
/// proof verifies under the checkpoint's index root and its pages list
/// exactly what a scan of the log's first `size` entries finds; a source
/// never named is proven absent.
#[test]
fn the_authenticated_index_proves_what_a_scan_finds_at_every_checkpoint() {
    use provenance::index::{page_count, verify_page, IndexKey};
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, all) = random_store(dir.path(), 5, 40);
    let w = Workload::new(5);
    let mut keys: Vec<IndexKey> = w
        .sources
        .iter()
        .map(|m| IndexKey::Source(m.source_id()))
        .collect();
    keys.push(IndexKey::Campaign(w.campaign.digest()));
    keys.push(IndexKey::Source(Digest([0xee; 32])));
    let names = |e: &LedgerEntry, key: &IndexKey| -> bool {
        let d = e.body.digest();
        storage::index_keys(e, &d, store.state()).contains(key)
    };
    let (mut checked, mut most_pages) = (0, 0);
    for height in 0..=store.head().height {
        let Some(cp) = store.checkpoint(height).expect("read") else {
            continue;
        };
        let size = cp.checkpoint.size;
        assert_eq!(store.index_root_at(size).expect("root"), cp.checkpoint.index);
        for key in &keys {
            let scan: Vec<u64> = all[..size as usize]
                .iter()
                .enumerate()
                .filter(|(_, e)| names(e, key))
                .map(|(i, _)| i as u64)
                .collect();
            let proof = store.index_proof(key, size).expect("proof");
            match proof.verify(key, &cp.checkpoint.index).expect("verifies") {
                None => assert!(scan.is_empty(), "{key:?} proven absent at {size}, named {scan:?}"),
                Some(v) => {
                    let mut listed = Vec::new();
                    for page in 0..page_count(v.count) {
                        let (positions, pp) = store.index_page(key, &v, page).expect("read").expect("page");
                        verify_page(&v, page, &positions, &pp).expect("page verifies");
                        listed.extend(positions);
                    }
                    assert!(store
                        .index_page(key, &v, page_count(v.count))
                        .expect("read")
                        .is_none());
                    assert_eq!(listed, scan, "{key:?} at size {size}");
                    most_pages = most_pages.max(page_count(v.count));
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} proofs checked");
    assert!(most_pages >= 2, "some list spans pages ({most_pages})");
    assert_eq!(
        store.index_root_at(store.head().log_size).expect("root"),
        store.head().index_root
    );
}

#[test]
fn refused_blocks_and_checkpoints_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dealt, signers) = consortium();
    let (mut store, _) = random_store(dir.path(), 4, 5);
    let before = (store.head().clone(), store.state().digest());
    let mut w = Workload::resume(4, store.state());
    let entries = w.next_events(3);
    let good = store.next_header(&entries, Timestamp(store.head().stamp.0 + 1), 0, 0);

    let mut h = good.clone();
    h.height += 1;
    assert!(matches!(
        store.append_block(&h, &entries, b""),
        Err(StoreError::BlockRefused(_))
    ));
    let mut h = good.clone();
    h.parent = Digest([1; 32]);
    assert!(matches!(
        store.append_block(&h, &entries, b""),
        Err(StoreError::BlockRefused(_))
    ));
    let mut h = good.clone();
    h.stamp = Timestamp(0);
    assert!(matches!(
        store.append_block(&h, &entries, b""),
        Err(StoreError::BlockRefused(_))
    ));
    assert!(matches!(
        store.append_block(&good, &entries[..2], b""),
        Err(StoreError::BlockRefused(_))
    ));
    // A chain break inside the block: the second event repeated.
    let broken = vec![entries[0].clone(), entries[0].clone()];
    let hb = store.next_header(&broken, good.stamp, 0, 0);
    assert!(matches!(
        store.append_block(&hb, &broken, b""),
        Err(StoreError::State(_))
    ));
    // A checkpoint for a root the log does not have, or signed by nobody.
    let bad_root = sign_checkpoint(
        Checkpoint {
            version: 5,
            origin: ORIGIN.into(),
            size: store.head().log_size,
            root: Digest([2; 32]),
            height: store.head().height,
            time: store.head().stamp,
            index: store.head().index_root,
        },
        &dealt,
        &signers,
    );
    assert!(matches!(
        store.put_checkpoint(&bad_root, &dealt.keyring),
        Err(StoreError::Checkpoint(_))
    ));
    let mut unsigned = bad_root.clone();
    unsigned.checkpoint.root = store.head().root;
    assert!(matches!(
        store.put_checkpoint(&unsigned, &dealt.keyring),
        Err(StoreError::Checkpoint(_))
    ));
    // A checkpoint the consortium signed with a time that is not this
    // chain's stamp at that height.
    let head = store.head().clone();
    // The head's checkpoint, signed by the consortium, with `time` and
    // `index` as given.
    let at_head = |time: Timestamp, index: Digest| {
        sign_checkpoint(
            Checkpoint {
                version: 5,
                origin: ORIGIN.into(),
                size: head.log_size,
                root: head.root,
                height: head.height,
                time,
                index,
            },
            &dealt,
            &signers,
        )
    };
    let bad_time = at_head(Timestamp(head.stamp.0 + 60_000), head.index_root);
    match store.put_checkpoint(&bad_time, &dealt.keyring) {
        Err(StoreError::Checkpoint(m)) => assert!(m.contains("time"), "{m}"),
        other => panic!("a checkpoint with another time is refused, got {other:?}"),
    }
    // A checkpoint the consortium signed over another index root.
    let bad_index = at_head(head.stamp, Digest([3; 32]));
    match store.put_checkpoint(&bad_index, &dealt.keyring) {
        Err(StoreError::Checkpoint(m)) => assert!(m.contains("index root"), "{m}"),
        other => panic!("a checkpoint with another index root is refused, got {other:?}"),
    }
    // q validators' note signatures without the consortium's: a verifier
    // accepts it, a node does not keep it (the BLS signature seeds data
    // orders).
    let mut notes_only = at_head(head.stamp, head.index_root);
    notes_only.signature = provenance::Bytes::default();
    notes_only
        .verify(&dealt.keyring)
        .expect("q note signatures verify");
    match store.put_checkpoint(&notes_only, &dealt.keyring) {
        Err(StoreError::Checkpoint(m)) => assert!(m.contains("no consortium signature"), "{m}"),
        other => panic!("a checkpoint without the BLS signature is not kept, got {other:?}"),
    }
    assert_eq!((store.head().clone(), store.state().digest()), before);
    // The good block still goes in.
    store.append_block(&good, &entries, b"").expect("good block");
}

#[test]
fn a_store_of_an_earlier_format_is_refused_not_rehashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dealt, _) = consortium();
    let (store, _) = random_store(dir.path(), 4, 3);
    let root = store.head().root;
    drop(store);
    // Reopened as it is: the same root (RFC 6962 over SHA-256).
    let store = Store::open(dir.path(), ORIGIN, &dealt.keyring).expect("reopen");
    assert_eq!(store.head().root, root);
    // A store of the SHA3-256 log (its format key names another tree).
    store
        .corrupt_for_test("meta", b"format", b"govtune-store/v1")
        .expect("mark");
    drop(store);
    let err = Store::open(dir.path(), ORIGIN, &dealt.keyring).expect_err("an earlier format");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Recovery(_)), "{msg}");
    assert!(
        msg.contains("earlier govtune") && msg.contains("SHA-256") && msg.contains("empty data_dir"),
        "{msg}"
    );
}

/// A store of the format before the authenticated index (no `authindex`
/// column family) is refused and left as it was: no column family is
/// added, so the govtune that wrote it still opens it.
#[test]
fn a_store_without_the_index_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dealt, _) = consortium();
    let earlier: Vec<&str> = [
        "meta",
        "blocks",
        "entries",
        "by_digest",
        "tree",
        "checkpoints",
        "blobs",
        "index",
        "state",
        "pending",
    ]
    .to_vec();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), &earlier).expect("an earlier store");
        let meta = db.cf_handle("meta").expect("meta");
        db.put_cf(meta, b"format", b"govtune-store/v4 log=rfc6962-sha256 entry=v3")
            .expect("format");
    }
    let err = Store::open(dir.path(), ORIGIN, &dealt.keyring).expect_err("an earlier format");
    assert!(err.to_string().contains("govtune-store/v4"), "{err}");
    let mut after = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).expect("list");
    after.retain(|c| c != "default");
    after.sort();
    let mut want: Vec<String> = earlier.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(after, want, "the refused store keeps its column families");
}

#[test]
fn recovery_refuses_a_store_whose_tree_disagrees_with_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dealt, _) = consortium();
    let (store, _) = random_store(dir.path(), 5, 10);
    let cp = store.latest_checkpoint().expect("checkpoint").clone();
    // Overwrite the largest perfect subtree the checkpoint's root is built
    // from (recovery reads the tree's nodes, it does not re-hash every leaf).
    let level = 63 - cp.checkpoint.size.leading_zeros();
    store
        .corrupt_for_test(
            "tree",
            &[&[level as u8][..], &0u64.to_be_bytes()].concat(),
            &[9u8; 32],
        )
        .expect("corrupt");
    drop(store);
    let err = Store::open(dir.path(), ORIGIN, &dealt.keyring).expect_err("refuses to open");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Recovery(_)), "{msg}");
    assert!(
        msg.contains(&cp.checkpoint.root.to_string()) || msg.contains("stored tree"),
        "{msg}"
    );

    // A store opened under another genesis refuses its checkpoints.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let (s2, _) = random_store(dir2.path(), 6, 6);
    drop(s2);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(77);
    let other = provenance::genesis::deal(
        &provenance::genesis::ConsortiumDescription::local_testnet(7100, 8100),
        Timestamp(1),
        &mut rng,
    )
    .expect("deal");
    assert!(matches!(
        Store::open(dir2.path(), ORIGIN, &other.keyring),
        Err(StoreError::Recovery(_))
    ));
}

#[test]
fn blobs_are_checked_on_read_and_safety_state_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dealt, _) = consortium();
    let store = Store::open(dir.path(), ORIGIN, &dealt.keyring).expect("open");
    let d = store.put_blob(b"adapter weights").expect("put");
    assert_eq!(
        store.blob(&d).expect("read").as_deref(),
        Some(&b"adapter weights"[..])
    );
    assert_eq!(store.blob(&Digest([3; 32])).expect("read"), None);
    store
        .corrupt_for_test("blobs", &d.0, b"tampered")
        .expect("corrupt");
    assert!(matches!(store.blob(&d), Err(StoreError::BlobMismatch(x)) if x == d));
    store.put_safety_state(b"view 7 locked 6").expect("safety");
    drop(store);
    let store = Store::open(dir.path(), ORIGIN, &dealt.keyring).expect("open");
    assert_eq!(
        store.safety_state().expect("read").as_deref(),
        Some(&b"view 7 locked 6"[..])
    );
}

#[test]
fn export_then_import_rebuilds_the_same_store_and_leaves_rehash_to_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dealt, _) = consortium();
    let (store, all) = random_store(&dir.path().join("a"), 7, 15);
    let mut bytes = Vec::new();
    let stats = store.export(&mut bytes).expect("export");
    assert_eq!(stats.entries, all.len() as u64);
    assert!(stats.checkpoints >= 3);

    // A monitor re-hashes the leaves (tag-2 payloads) on its own.
    let mut leaves = Vec::new();
    let mut at = b"govtune-export/v1\n".len();
    while bytes[at] != 0 {
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
        if bytes[at] == 2 {
            leaves.push(LogHasher::hash_leaf(&bytes[at + 5..at + 5 + len]));
        }
        at += 5 + len;
    }
    assert_eq!(
        MemoryTree::<LogHasher>::from_leaf_hashes(leaves).root(),
        store.head().root
    );

    let seen = std::cell::RefCell::new(BTreeSet::new());
    let check = |h: &provenance::BlockHeader, cert: &[u8]| {
        seen.borrow_mut().insert(h.height);
        if cert == b"cert" {
            Ok(())
        } else {
            Err("unknown certificate".to_string())
        }
    };
    let (imported, istats) =
        import(&dir.path().join("b"), ORIGIN, &dealt.keyring, &bytes[..], &check).expect("import");
    assert_eq!(istats.blocks, store.head().height);
    assert_eq!(
        seen.borrow().len() as u64,
        store.head().height,
        "every certificate checked"
    );
    assert_eq!(imported.head(), store.head());
    assert_eq!(imported.state().digest(), store.state().digest());
    assert_eq!(imported.latest_checkpoint(), store.latest_checkpoint());

    // A bad certificate, a truncated stream or a flipped entry byte is refused.
    let refuse = |_: &provenance::BlockHeader, _: &[u8]| Err("no".to_string());
    assert!(import(&dir.path().join("c"), ORIGIN, &dealt.keyring, &bytes[..], &refuse).is_err());
    assert!(import(
        &dir.path().join("d"),
        ORIGIN,
        &dealt.keyring,
        &bytes[..bytes.len() / 2],
        &check
    )
    .is_err());
    let mut flipped = bytes.clone();
    let i = flipped.len() / 2;
    flipped[i] ^= 0x10;
    assert!(import(
        &dir.path().join("e"),
        ORIGIN,
        &dealt.keyring,
        &flipped[..],
        &check
    )
    .is_err());
}
