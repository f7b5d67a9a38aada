//! Every object decoder, on arbitrary bytes: never panics, and whatever
//! decodes re-encodes to the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenance::codec::{decode, Canonical};
use provenance::*;

fn check<T: Canonical>(data: &[u8]) {
    if let Ok(v) = decode::<T>(data) {
        assert_eq!(v.encode(), data, "{} decoded from non-canonical bytes", T::KIND.name());
    }
}

fuzz_target!(|data: &[u8]| {
    check::<LedgerEntry>(data);
    check::<DataSourceManifest>(data);
    check::<PolicyArtifact>(data);
    check::<Campaign>(data);
    check::<CampaignClose>(data);
    check::<StepEvent>(data);
    check::<CompositeEvent>(data);
    check::<Refusal>(data);
    check::<RefusalAggregate>(data);
    check::<Revocation>(data);
    check::<Checkpoint>(data);
    check::<Genesis>(data);
});
