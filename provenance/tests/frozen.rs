//! Frozen wire formats: the digests of fixed sample objects are committed
//! here. A change to any encoding, domain tag or field order changes a
//! digest and fails this test; if the change is intended, bump the object's
//! format version and update the digest.

mod common;

use common::*;
use provenance::Canonical;

fn sample_checkpoint() -> provenance::Checkpoint {
    provenance::Checkpoint {
        version: 3,
        origin: "govtune-testnet".into(),
        size: 17,
        root: provenance::Digest([7; 32]),
        height: 9,
        time: provenance::Timestamp(1_764_000_000_000),
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
    ];
    let want = [
        (
            "manifest",
            "a22141b3b369a8ea9856bac4902d3a22cd44a551eaff11d378d05d5c5644013d",
        ),
        (
            "policy",
            "299b56cfcc78c3deac897b017a7e2b0ba2663bd43f441fb7623512193f80e2cf",
        ),
        (
            "campaign",
            "b48491452325edb0b0cd086bd2d55b1c04b19c9ca6d0340d0c57c2e0cbc98771",
        ),
        (
            "step-event",
            "c4b5f8b7e25b7a21af7824cc55043985bceb8e1d771c3a723825ffb653808b21",
        ),
        (
            "genesis",
            "0a87bbdf07092ec865de2eba57f4ac5032ccc16e517493833de0e96b851f6131",
        ),
        (
            "checkpoint",
            "dae8f50713e67adc1ab67216047b8361c5e9fa107120123b4558d02e68812975",
        ),
    ];
    for ((name, g), (_, w)) in got.iter().zip(want.iter()) {
        assert_eq!(g, w, "{name} encoding changed");
    }
}
