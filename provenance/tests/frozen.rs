//! Frozen wire formats: the digests of fixed sample objects are committed
//! here. A change to any encoding, domain tag or field order changes a
//! digest and fails this test; if the change is intended, bump the object's
//! format version and update the digest.

mod common;

use common::*;
use provenance::Canonical;

fn sample_checkpoint() -> provenance::Checkpoint {
    provenance::Checkpoint {
        version: 5,
        origin: "govtune-testnet".into(),
        size: 17,
        root: provenance::Digest([7; 32]),
        height: 9,
        time: provenance::Timestamp(1_764_000_000_000),
        index: provenance::Digest([9; 32]),
    }
}

fn sample_signed_checkpoint() -> provenance::SignedCheckpoint {
    provenance::SignedCheckpoint {
        checkpoint: sample_checkpoint(),
        signature: provenance::Bytes(vec![0xab; 96]),
        validators: vec![provenance::ValidatorSignature {
            validator: 2,
            signature: provenance::Bytes(vec![0xcd; 64]),
        }],
    }
}

#[test]
fn sample_object_digests_are_frozen() {
    let w = world();
    let got = [
        ("manifest", w.globe.digest().to_hex()),
        ("policy", w.policy.digest().to_hex()),
        ("campaign", w.campaign.digest().to_hex()),
        ("step-event", w.step_event().digest().to_hex()),
        ("genesis", fixture().dealt.genesis.digest().to_hex()),
        ("checkpoint", sample_checkpoint().digest().to_hex()),
        ("signed-checkpoint", sample_signed_checkpoint().digest().to_hex()),
    ];
    let want = [
        (
            "manifest",
            "a22141b3b369a8ea9856bac4902d3a22cd44a551eaff11d378d05d5c5644013d",
        ),
        (
            "policy",
            "6e4b95b7e7fb6e0485105d9d386f3b5ce76c2b3b7c6d5a7c5d453fa046d93231",
        ),
        (
            "campaign",
            "dc95c2ba99d54627528be66965a263da04c4456375a8a01be169b88ff335bf36",
        ),
        (
            "step-event",
            "ed4c78d593f3a6bd7f522d5c0731a2a478d52c5247a5fd80d2d79c6cec27d6af",
        ),
        (
            "genesis",
            "0e9fde9b723bd94451d12d619ad7c1b717a058840a24ee6a0f25f51549f9b69b",
        ),
        (
            "checkpoint",
            "13982392b7ca4d0ff74cd81d9476255ed715a81702bdc6b5ecec50ca7447119d",
        ),
        (
            "signed-checkpoint",
            "1851441325ec75c5783eefdf61731a88f24de89029b6e9d2a475887d5904a4d5",
        ),
    ];
    for ((name, g), (_, w)) in got.iter().zip(want.iter()) {
        assert_eq!(g, w, "{name} encoding changed");
    }
}
