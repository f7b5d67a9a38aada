//! Which secondary index keys an entry is filed under.

use std::collections::BTreeSet;

use provenance::{EntryBody, LedgerEntry, LedgerView};

use crate::keys::IndexPrefix;

/// The index prefixes of `entry`, resolved against `view` (the ledger state
/// after the entry's block, which holds everything the entry refers to).
pub fn index_prefixes(entry: &LedgerEntry, view: &dyn LedgerView) -> BTreeSet<IndexPrefix> {
    let mut out = BTreeSet::new();
    let body = &entry.body;
    let digest = body.digest();
    match body {
        EntryBody::Manifest(_) => {
            out.insert(IndexPrefix::source(&digest));
        }
        EntryBody::Policy(_) | EntryBody::Checkpoint(_) => {}
        EntryBody::Campaign(_) => {
            out.insert(IndexPrefix::campaign(&digest));
        }
        EntryBody::CampaignClose(c) => {
            out.insert(IndexPrefix::campaign(&c.campaign));
            for s in &c.per_source {
                out.insert(IndexPrefix::source(&s.source));
            }
        }
        EntryBody::Step(e) => {
            out.insert(IndexPrefix::campaign(&e.link.campaign));
            for r in &e.examples {
                out.insert(IndexPrefix::source(&r.source));
                out.insert(IndexPrefix::example(&r.source, r.index));
            }
            for b in &e.measurement.blocks {
                out.insert(IndexPrefix::parameter_block(b.block));
            }
        }
        EntryBody::Composite(e) => {
            out.insert(IndexPrefix::campaign(&e.link.campaign));
            for r in &e.records {
                out.insert(IndexPrefix::source(&r.source));
                out.insert(IndexPrefix::example(&r.source, r.index));
            }
            for b in &e.measurement.blocks {
                out.insert(IndexPrefix::parameter_block(b.block));
            }
        }
        EntryBody::Refusal(r) => {
            out.insert(IndexPrefix::campaign(&r.link.campaign));
            for x in &r.examples {
                out.insert(IndexPrefix::source(&x.source));
                out.insert(IndexPrefix::example(&x.source, x.index));
            }
            if let Some(m) = &r.measurement {
                for b in &m.blocks {
                    out.insert(IndexPrefix::parameter_block(b.block));
                }
            }
        }
        EntryBody::RefusalAggregate(r) => {
            out.insert(IndexPrefix::campaign(&r.link.campaign));
            for c in &r.counts {
                out.insert(IndexPrefix::source(&c.source));
            }
        }
        EntryBody::Revocation(r) => {
            out.insert(IndexPrefix::source(&r.source));
        }
    }
    if let Ok(plan) = body.signing_plan(view) {
        for r in plan.requests {
            out.insert(IndexPrefix::authority(r.authority.as_str()));
        }
    }
    out
}
