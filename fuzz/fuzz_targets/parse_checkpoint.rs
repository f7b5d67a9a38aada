//! C2SP checkpoint parsing on arbitrary text: never panics, and whatever
//! parses re-renders to the same body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenance::checkpoint::SignedCheckpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cp) = SignedCheckpoint::from_c2sp(text, "govtune-testnet", &[0u8; 48]) {
            assert!(text.starts_with(&cp.checkpoint.note_body()));
        }
    }
});
