//! The chain-record view of an entry: what every reader of a campaign's
//! records asks of a step, a composite, a refusal or an aggregate, named
//! once so that no caller takes the variants apart itself.

use crate::digest::Digest;
use crate::entry::EntryBody;
use crate::event::{ChainLink, ExampleRecord, Measurement};
use crate::ids::Timestamp;
use crate::order::OrderSpan;

/// A training event (step or composite) as one shape.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Its place in the campaign's chain.
    pub link: &'a ChainLink,
    /// The positions of the order it draws from.
    pub order: &'a OrderSpan,
    /// The policy it ran under.
    pub policy: &'a Digest,
    /// Its example records.
    pub records: &'a [ExampleRecord],
    /// The measurement of its update.
    pub measurement: &'a Measurement,
    /// Its sketch blob.
    pub sketch_blob: &'a Digest,
    /// Its delta blob.
    pub delta_blob: &'a Digest,
    /// When it ran.
    pub step_time: Timestamp,
    /// First training step it covers.
    pub first_step: u64,
    /// Last training step it covers (a step event: the same step).
    pub last_step: u64,
}

impl EntryBody {
    /// The training event view of a step or composite.
    pub fn event(&self) -> Option<EventView<'_>> {
        match self {
            EntryBody::Step(e) => Some(EventView {
                link: &e.link,
                order: &e.order,
                policy: &e.policy,
                records: &e.examples,
                measurement: &e.measurement,
                sketch_blob: &e.sketch_blob,
                delta_blob: &e.delta_blob,
                step_time: e.step_time,
                first_step: e.step,
                last_step: e.step,
            }),
            EntryBody::Composite(e) => Some(EventView {
                link: &e.link,
                order: &e.order,
                policy: &e.policy,
                records: &e.records,
                measurement: &e.measurement,
                sketch_blob: &e.sketch_blob,
                delta_blob: &e.delta_blob,
                step_time: e.step_time,
                first_step: e.first_step,
                last_step: e.last_step,
            }),
            _ => None,
        }
    }

    /// The chain link of a campaign record (step, composite, refusal,
    /// aggregate).
    pub fn chain_link(&self) -> Option<&ChainLink> {
        match self {
            EntryBody::Step(e) => Some(&e.link),
            EntryBody::Composite(e) => Some(&e.link),
            EntryBody::Refusal(e) => Some(&e.link),
            EntryBody::RefusalAggregate(e) => Some(&e.link),
            _ => None,
        }
    }

    /// The policy a campaign record ran under.
    pub fn record_policy(&self) -> Option<&Digest> {
        match self {
            EntryBody::Step(e) => Some(&e.policy),
            EntryBody::Composite(e) => Some(&e.policy),
            EntryBody::Refusal(e) => Some(&e.policy),
            EntryBody::RefusalAggregate(e) => Some(&e.policy),
            _ => None,
        }
    }

    /// The time a campaign record claims, which consensus bounds by its
    /// block's stamp: a training event's step time, a refusal's time.
    pub fn record_time(&self) -> Option<Timestamp> {
        match self {
            EntryBody::Refusal(r) => Some(r.time),
            b => b.event().map(|e| e.step_time),
        }
    }

    /// The campaign a campaign record or close belongs to.
    pub fn campaign_id(&self) -> Option<&Digest> {
        match self {
            EntryBody::CampaignClose(c) => Some(&c.campaign),
            b => b.chain_link().map(|l| &l.campaign),
        }
    }

    /// Every source an entry names (its records, refused examples,
    /// refusal counts, per-source totals, or the revoked source), each
    /// once, in first-use order. A manifest names no source but itself.
    pub fn sources_named(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = match self {
            EntryBody::Step(_) | EntryBody::Composite(_) => self
                .event()
                .map(|e| e.records.iter().map(|r| r.source).collect())
                .unwrap_or_default(),
            EntryBody::Refusal(r) => r.examples.iter().map(|x| x.source).collect(),
            EntryBody::RefusalAggregate(r) => r.counts.iter().map(|c| c.source).collect(),
            EntryBody::CampaignClose(c) => c.per_source.iter().map(|p| p.source).collect(),
            EntryBody::Revocation(r) => vec![r.source],
            _ => Vec::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|d| seen.insert(*d));
        out
    }

    /// The examples an entry names, as (source, index): a training
    /// event's records and a refusal's examples.
    pub fn examples_named(&self) -> Vec<(Digest, u64)> {
        match self {
            EntryBody::Refusal(r) => r.examples.iter().map(|x| (x.source, x.index)).collect(),
            b => b
                .event()
                .map(|e| e.records.iter().map(|r| (r.source, r.index)).collect())
                .unwrap_or_default(),
        }
    }
}
