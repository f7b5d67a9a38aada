//! Figures for README: SHA3 throughput, Merkle proofs at 2^20 leaves,
//! sign / verify / aggregate-verify per scheme, and a 2-of-3 authority's
//! shares, combination and verification per scheme. With
//! `--features compare-threshold-crypto`, `threshold_crypto` runs the same
//! BLS operations beside `blsttc`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use provenance::crypto::{verify_cosignature, CoSigner, SignRequest, SignatureScheme};
use provenance::digest::{tagged_hash, ObjectKind};
use provenance::genesis::{deal, ConsortiumDescription, NodeSigners};
use provenance::merkle::{verify_consistency, verify_inclusion, LogHasher, MemoryTree, TreeHasher};
use provenance::{Role, Timestamp};
use rand::SeedableRng;

fn sha3(c: &mut Criterion) {
    let mut g = c.benchmark_group("sha3_256");
    for size in [64usize, 1024, 1 << 20] {
        let data = vec![7u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, d| {
            b.iter(|| tagged_hash(ObjectKind::Blob, d))
        });
    }
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let n: u64 = 1 << 20;
    let tree = MemoryTree::<LogHasher>::from_leaf_hashes(
        (0..n).map(|i| <LogHasher as TreeHasher>::hash_leaf(&i.to_be_bytes())),
    );
    let root = tree.root();
    let mut g = c.benchmark_group("merkle_2^20");
    let idx = 777_777u64;
    g.bench_function("inclusion_proof_build", |b| {
        b.iter(|| tree.inclusion_proof(idx, n))
    });
    let proof = tree.inclusion_proof(idx, n).expect("proof");
    let leaf = tree.leaf_hash(idx).expect("leaf");
    g.bench_function("inclusion_proof_verify", |b| {
        b.iter(|| verify_inclusion::<LogHasher>(idx, n, &leaf, &proof, &root))
    });
    let first = 600_001u64;
    g.bench_function("consistency_proof_build", |b| {
        b.iter(|| tree.consistency_proof(first, n))
    });
    let cproof = tree.consistency_proof(first, n).expect("proof");
    let r1 = tree.root_at(first).expect("root");
    g.bench_function("consistency_proof_verify", |b| {
        b.iter(|| verify_consistency::<LogHasher>(first, n, &cproof, &r1, &root))
    });
    g.finish();
}

fn signers() -> (provenance::genesis::Dealt, Vec<NodeSigners>) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let dealt = deal(
        &ConsortiumDescription::local_testnet(7100, 8100),
        Timestamp(1),
        &mut rng,
    )
    .expect("deal");
    let s = dealt.signers().expect("signers");
    (dealt, s)
}

fn signatures(c: &mut Criterion) {
    let (dealt, s) = signers();
    let kr = &dealt.keyring;
    let msg = vec![42u8; 64];
    let mut g = c.benchmark_group("signature");
    for scheme in SignatureScheme::ALL {
        let name = scheme.to_string();
        g.bench_function(format!("{name}/sign"), |b| {
            b.iter(|| s[0].authority.sign(scheme, &msg))
        });
        let sig = s[0].authority.sign(scheme, &msg).expect("sign");
        g.bench_function(format!("{name}/verify"), |b| b.iter(|| kr.verify(&sig, &msg)));
    }
    // A 3-signer co-signature (data source, governance, operator) over
    // distinct messages: BLS aggregate (one multi-pairing) vs lists.
    let required: Vec<SignRequest> = [
        (0usize, Role::DataSource),
        (2, Role::Governance),
        (3, Role::Operator),
    ]
    .iter()
    .map(|&(i, role)| SignRequest {
        authority: s[i].authority.authority().clone(),
        role,
        message: format!("section {i}").into_bytes(),
    })
    .collect();
    for scheme in SignatureScheme::ALL {
        let mut co = CoSigner::new(kr, scheme, required.clone()).expect("cosigner");
        for (r, i) in required.iter().zip([0usize, 2, 3]) {
            co.add(s[i].authority.sign(scheme, &r.message).expect("sign"))
                .expect("add");
        }
        let cosig = co.finish().expect("complete");
        g.bench_function(format!("{scheme}/3-signer-cosignature-verify"), |b| {
            b.iter(|| verify_cosignature(kr, Some(scheme), &required, &cosig).expect("valid"))
        });
    }
    // Threshold combination of the consortium key: q = 3 shares.
    let shares: Vec<_> = s
        .iter()
        .take(3)
        .map(|n| n.consortium.as_ref().expect("a validator").sign_share(&msg))
        .collect();
    g.bench_function("bls12-381/consortium-combine-3-shares", |b| {
        b.iter(|| kr.combine_consortium_shares(&msg, &shares))
    });
    g.finish();
}

/// An authority of three nodes signing 2-of-3: per scheme, one node's
/// share, the combination of two (each share checked under its node's
/// key) and the verification of the result, beside the one-node
/// authority's sign and verify above.
fn authority_2_of_3(c: &mut Criterion) {
    let mut desc = ConsortiumDescription::local_testnet(7100, 8100);
    desc.authorities[0].threshold = Some(1);
    for i in 1..3u16 {
        desc.authorities[0]
            .nodes
            .push(provenance::genesis::NodeDescription {
                name: format!("globe-{i}"),
                p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", 7190 + i),
                api_listen: format!("127.0.0.1:{}", 8190 + i),
                signing_member: true,
                api_certificate: Default::default(),
            });
    }
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(6);
    let dealt = deal(&desc, Timestamp(1), &mut rng).expect("deal");
    let kr = &dealt.keyring;
    let all = dealt.signers().expect("signers");
    let globe: Vec<_> = all
        .iter()
        .filter(|s| s.authority.index() < 3 && s.authority.threshold() == 1)
        .collect();
    let id = globe[0].authority.authority().clone();
    let msg = vec![42u8; 64];
    let mut g = c.benchmark_group("authority_2_of_3");
    for scheme in SignatureScheme::ALL {
        g.bench_function(format!("{scheme}/share"), |b| {
            b.iter(|| globe[0].authority.sign_share(scheme, &msg))
        });
        let shares: Vec<_> = globe[..2]
            .iter()
            .map(|s| s.authority.sign_share(scheme, &msg).expect("share"))
            .collect();
        g.bench_function(format!("{scheme}/combine-2-shares"), |b| {
            b.iter(|| {
                kr.combine_authority_shares(&id, scheme, &msg, &shares)
                    .expect("combine")
            })
        });
        let sig = kr
            .combine_authority_shares(&id, scheme, &msg, &shares)
            .expect("combine");
        g.bench_function(format!("{scheme}/verify"), |b| b.iter(|| kr.verify(&sig, &msg)));
    }
    g.finish();
}

#[cfg(feature = "compare-threshold-crypto")]
fn threshold_crypto_rows(c: &mut Criterion) {
    use std::collections::BTreeMap;
    let msg = vec![42u8; 64];
    let mut g = c.benchmark_group("signature");
    let sk = threshold_crypto::SecretKey::random();
    let pk = sk.public_key();
    g.bench_function("threshold_crypto/sign", |b| b.iter(|| sk.sign(&msg)));
    let sig = sk.sign(&msg);
    g.bench_function("threshold_crypto/verify", |b| b.iter(|| pk.verify(&sig, &msg)));
    let mut rng = rand07::thread_rng();
    let set = threshold_crypto::SecretKeySet::random(2, &mut rng);
    let pks = set.public_keys();
    let shares: BTreeMap<usize, _> = (0..3).map(|i| (i, set.secret_key_share(i).sign(&msg))).collect();
    g.bench_function("threshold_crypto/combine-3-shares", |b| {
        b.iter(|| pks.combine_signatures(&shares).expect("combine"))
    });
    // blsttc, the same operations on the same message, for the ratio.
    let bsk = blsttc::SecretKey::random();
    let bpk = bsk.public_key();
    g.bench_function("blsttc/sign", |b| b.iter(|| bsk.sign(&msg)));
    let bsig = bsk.sign(&msg);
    g.bench_function("blsttc/verify", |b| b.iter(|| bpk.verify(&bsig, &msg)));
    let bset = blsttc::SecretKeySet::random(2, &mut rand::thread_rng());
    let bpks = bset.public_keys();
    let bshares: BTreeMap<usize, _> = (0..3).map(|i| (i, bset.secret_key_share(i).sign(&msg))).collect();
    g.bench_function("blsttc/combine-3-shares", |b| {
        b.iter(|| bpks.combine_signatures(&bshares).expect("combine"))
    });
    g.finish();
}

/// The authenticated index over a synthetic log of 10^6 entries, each
/// naming one of 10^4 sources and one of 100 campaigns: proofs of a
/// source's value, of a page of its positions and of an absent source;
/// their sizes are printed once.
fn index(c: &mut Criterion) {
    use provenance::index::{verify_page, IndexKey, MemoryIndex};
    let key = |kind: u64, i: u64| {
        let d = provenance::Digest(
            <LogHasher as TreeHasher>::hash_leaf(&[kind.to_be_bytes(), i.to_be_bytes()].concat()).0,
        );
        if kind == 0 {
            IndexKey::Source(d)
        } else {
            IndexKey::Campaign(d)
        }
    };
    let mut ix = MemoryIndex::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let built = std::time::Instant::now();
    for n in 0..1_000_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ix.add(key(0, x % 10_000), n);
        ix.add(key(1, n % 100), n);
        if n % 1000 == 999 {
            // One block's additions.
            if n % 100_000 == 99_999 {
                ix.commit();
            }
        }
    }
    let root = ix.commit();
    let source = key(0, 1234);
    let proof = ix.prove(&source);
    let value = proof.verify(&source, &root).expect("verifies").expect("present");
    let (page, page_proof) = ix.page(&source, 0).expect("page 0");
    let absent = key(0, 10_001);
    let none = ix.prove(&absent);
    eprintln!(
        "index of 10^6 entries, {} keys: built and committed in {:.1} s; a source's proof {} siblings ({} bytes), its {} entries in {} page(s), a page's proof {} hashes; an absent source's proof {} siblings",
        ix.len(),
        built.elapsed().as_secs_f64(),
        proof.siblings.len(),
        proof.siblings.len() * 32 + 72,
        value.count,
        provenance::index::page_count(value.count),
        page_proof.len(),
        none.siblings.len()
    );
    // The same tree kept node by node, as a store keeps it.
    use provenance::index::nodes::{self, Node, NodeId};
    let mut kept: std::collections::HashMap<NodeId, Node> = std::collections::HashMap::new();
    for n in 0..10_000u64 {
        let k = key(0, n);
        if let Some(v) = ix.value(&k) {
            nodes::set(&mut kept, &k.path(), v);
        }
    }
    for n in 0..100u64 {
        let k = key(1, n);
        if let Some(v) = ix.value(&k) {
            nodes::set(&mut kept, &k.path(), v);
        }
    }
    assert_eq!(nodes::root(&kept), root, "the kept tree has the index's root");
    let mut g = c.benchmark_group("index_10^6");
    g.bench_function("prove_source", |b| b.iter(|| ix.prove(&source)));
    g.bench_function("kept/prove_source", |b| {
        b.iter(|| nodes::prove(&kept, &source.path()))
    });
    let mut bumped = value;
    g.bench_function("kept/update_one_key", |b| {
        b.iter(|| {
            bumped.count += 1;
            nodes::set(&mut kept, &source.path(), bumped)
        })
    });
    g.bench_function("verify_present", |b| b.iter(|| proof.verify(&source, &root)));
    g.bench_function("verify_absent", |b| b.iter(|| none.verify(&absent, &root)));
    g.bench_function("verify_page", |b| {
        b.iter(|| verify_page(&value, 0, &page, &page_proof))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}

#[cfg(feature = "compare-threshold-crypto")]
criterion_group!(name = benches; config = config(); targets = sha3, merkle, signatures, authority_2_of_3, index, threshold_crypto_rows);
#[cfg(not(feature = "compare-threshold-crypto"))]
criterion_group!(name = benches; config = config(); targets = sha3, merkle, signatures, authority_2_of_3, index);
criterion_main!(benches);
