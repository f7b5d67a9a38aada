//! C2SP checkpoint parsing on arbitrary text: never panics, and whatever
//! parses re-renders to the same body.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use provenance::checkpoint::SignedCheckpoint;
use provenance::genesis::{deal, ConsortiumDescription};
use provenance::KeyRing;
use rand::SeedableRng;

fn keyring() -> &'static KeyRing {
    static K: OnceLock<KeyRing> = OnceLock::new();
    K.get_or_init(|| {
        deal(
            &ConsortiumDescription::local_testnet(7100, 8100),
            provenance::Timestamp(1),
            &mut rand_chacha::ChaCha20Rng::seed_from_u64(1),
        )
        .expect("deals")
        .keyring
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((cp, _)) = SignedCheckpoint::from_c2sp(text, keyring()) {
            assert!(text.starts_with(&cp.checkpoint.note_body()));
        }
    }
});
