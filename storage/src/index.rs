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
        EntryBody::Policy(_) | EntryBody::Checkpoint(_) => {}
        EntryBody::Campaign(_) => {
            out.insert(IndexPrefix::campaign(digest));
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
    for a in signers(body, view) {
        out.insert(IndexPrefix::authority(a.as_str()));
    }
    out
}

/// The authorities that must sign `body` (the authority side of
/// `EntryBody::signing_plan`, without building the signed messages, which
/// costs a hash of every section; the tests check both agree).
fn signers<'a>(body: &'a EntryBody, view: &'a dyn LedgerView) -> BTreeSet<&'a AuthorityId> {
    let mut out = BTreeSet::new();
    let policy_author = |d| view.policy(d).map(|p| &p.authority);
    let operator = |d| view.campaign(d).map(|c| &c.operator);
    match body {
        EntryBody::Manifest(m) => {
            out.insert(&m.authority);
        }
        EntryBody::Policy(p) => {
            out.insert(&p.authority);
        }
        EntryBody::Campaign(c) => {
            out.insert(&c.operator);
        }
        EntryBody::CampaignClose(c) => out.extend(operator(&c.campaign)),
        EntryBody::Step(e) => {
            out.extend(
                e.examples
                    .iter()
                    .filter_map(|r| view.source(&r.source).map(|m| &m.authority)),
            );
            out.extend(policy_author(&e.policy));
            out.extend(operator(&e.link.campaign));
        }
        EntryBody::Composite(e) => {
            out.extend(
                e.records
                    .iter()
                    .filter_map(|r| view.source(&r.source).map(|m| &m.authority)),
            );
            out.extend(policy_author(&e.policy));
            out.extend(operator(&e.link.campaign));
        }
        EntryBody::Refusal(r) => {
            out.extend(policy_author(&r.policy));
            out.extend(operator(&r.link.campaign));
        }
        EntryBody::RefusalAggregate(r) => {
            out.extend(policy_author(&r.policy));
            out.extend(operator(&r.link.campaign));
        }
        EntryBody::Revocation(r) => {
            out.insert(&r.authority);
        }
        EntryBody::Checkpoint(_) => {}
    }
    out
}
