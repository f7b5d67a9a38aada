//! The bytes the operator sends governance for replay audits
//! (`tuner::material`): they round-trip, and every truncation, trailing
//! byte, oversized count or bad header is a typed error, never a panic or
//! a large allocation.

use std::collections::BTreeMap;

use provenance::Digest;
use tuner::material::{AuditContext, AuditMaterial, MAX_ITEMS};
use tuner::memo::Canary;
use tuner::optim::{AdamW, AdamWConfig};

fn optim() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    }
}

fn material() -> AuditMaterial {
    let mut opt = AdamW::new(optim(), [3, 5]);
    let mut params = vec![vec![0.5f32; 3], vec![-0.25f32; 5]];
    opt.apply(&mut params, &[Some(vec![0.1, -0.2, 0.3]), Some(vec![1.0; 5])]);
    AuditMaterial {
        seq: 7,
        opt_before: opt,
        windows: vec![b"to be or not".to_vec(), b"that is the question".to_vec()],
        salts: BTreeMap::from([(Digest([1; 32]), [2; 32]), (Digest([3; 32]), [4; 32])]),
    }
}

fn context() -> AuditContext {
    AuditContext {
        probe: vec![b"now is the winter".to_vec(), b"of our discontent".to_vec()],
        canaries: vec![Canary {
            prefix: "the secret is ".into(),
            secret: "7Q2X".into(),
            candidates: 100,
        }],
    }
}

#[test]
fn material_and_context_round_trip() {
    let m = material();
    let back = AuditMaterial::from_bytes(&m.to_bytes(), optim()).expect("decodes");
    assert_eq!(back.seq, m.seq);
    assert_eq!(back.opt_before.digest(), m.opt_before.digest());
    assert_eq!(back.windows, m.windows);
    assert_eq!(back.salts, m.salts);
    let c = context();
    assert_eq!(AuditContext::from_bytes(&c.to_bytes()).expect("decodes"), c);
    let mut other = c.clone();
    other.canaries[0].secret = "7Q2Y".into();
    assert_ne!(other.digest(), c.digest(), "the digest commits the canaries");
}

#[test]
fn every_truncation_trailing_byte_and_bad_header_is_an_error() {
    let m = material().to_bytes();
    for n in 0..m.len() {
        assert!(
            AuditMaterial::from_bytes(&m[..n], optim()).is_err(),
            "truncated at {n}"
        );
    }
    let mut t = m.clone();
    t.push(0);
    assert!(AuditMaterial::from_bytes(&t, optim()).is_err());
    let mut magic = m.clone();
    magic[0] = b'X';
    assert!(AuditMaterial::from_bytes(&magic, optim()).is_err());
    let mut version = m.clone();
    version[5] = 9;
    assert!(AuditMaterial::from_bytes(&version, optim()).is_err());
    let c = context().to_bytes();
    for n in 0..c.len() {
        assert!(AuditContext::from_bytes(&c[..n]).is_err(), "truncated at {n}");
    }
    let mut t = c.clone();
    t.push(0);
    assert!(AuditContext::from_bytes(&t).is_err());
    // A secret that is not UTF-8.
    let mut bad = context();
    bad.canaries[0].secret = "x".into();
    let mut b = bad.to_bytes();
    let last = b.len() - 5;
    b[last] = 0xff;
    assert!(AuditContext::from_bytes(&b).is_err());
}

#[test]
fn oversized_counts_and_lengths_are_refused_before_allocating() {
    // A header, then a count far above the limit.
    let mut b = b"GTAC".to_vec();
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&(MAX_ITEMS as u32 + 1).to_be_bytes());
    assert!(AuditContext::from_bytes(&b).is_err());
    // A piece claiming 2^32 - 1 floats in a few bytes.
    let mut m = b"GTAM".to_vec();
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&0u64.to_be_bytes());
    m.extend_from_slice(&0u64.to_be_bytes());
    m.extend_from_slice(&1u32.to_be_bytes());
    m.extend_from_slice(&u32::MAX.to_be_bytes());
    m.extend_from_slice(&[0; 16]);
    assert!(AuditMaterial::from_bytes(&m, optim()).is_err());
    // A window claiming a gigabyte.
    let mut w = b"GTAC".to_vec();
    w.extend_from_slice(&1u16.to_be_bytes());
    w.extend_from_slice(&1u32.to_be_bytes());
    w.extend_from_slice(&(1u32 << 30).to_be_bytes());
    assert!(AuditContext::from_bytes(&w).is_err());
    // A source listed twice.
    let mut dup = material();
    dup.salts.clear();
    let mut bytes = dup.to_bytes();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&2u32.to_be_bytes());
    bytes.extend_from_slice(&[5; 64]);
    bytes.extend_from_slice(&[5; 64]);
    assert!(AuditMaterial::from_bytes(&bytes, optim()).is_err());
}
