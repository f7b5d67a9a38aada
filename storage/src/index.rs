//! Which secondary index keys an entry is filed under.

use std::collections::BTreeSet;

use provenance::{AuthorityId, Digest, EntryBody, LedgerEntry, LedgerView};

use crate::keys::IndexPrefix;

/// The index prefixes of `entry` (whose body digest is `digest`), resolved
/// against `view` (the ledger state after the entry's block, which holds
/// everything the entry refers to).
pub fn index_prefixes(entry: &LedgerEntry, digest: &Digest, view: &dyn LedgerView) -> BTreeSet<IndexPrefix> {
    let mut out = BTreeSet::new();
    let body = &entry.body;
    match body {
        EntryBody::Manifest(_) => {
            out.insert(IndexPrefix::source(digest));
        }
        EntryBody::Campaign(_) => {
            out.insert(IndexPrefix::campaign(digest));
        }
        b => {
            if let Some(c) = b.campaign_id() {
                out.insert(IndexPrefix::campaign(c));
            }
        }
    }
    for s in body.sources_named() {
        out.insert(IndexPrefix::source(&s));
    }
    for (s, i) in body.examples_named() {
        out.insert(IndexPrefix::example(&s, i));
    }
    let measurement = match body {
        EntryBody::Refusal(r) => r.measurement.as_ref(),
        b => b.event().map(|e| e.measurement),
    };
    for b in measurement.iter().flat_map(|m| &m.blocks) {
        out.insert(IndexPrefix::parameter_block(b.block));
    }
    for a in signers(body, view) {
        out.insert(IndexPrefix::authority(a.as_str()));
    }
    out
}

/// The authorities that must sign `body`: the signing rule's signers
/// (without hashing the sections it would sign).
fn signers<'a>(body: &'a EntryBody, view: &'a dyn LedgerView) -> BTreeSet<&'a AuthorityId> {
    body.required_signers(view)
        .map(|s| s.signers.into_iter().map(|x| x.authority).collect())
        .unwrap_or_default()
}
