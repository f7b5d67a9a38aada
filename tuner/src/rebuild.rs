//! Rebuilding a model from its base and its delta blobs alone.
//!
//! The fine-tuning campaign starts from the base weights plus adapters
//! initialised from the campaign's sketch seed ([`adapter_init_seed`]);
//! each committed event's delta blob XORs the pieces it changed. Applying
//! them in chain order gives the final adapters, whose model-state digest
//! must equal the [`CampaignClose`]'s `final_state`.

use std::sync::Arc;

use provenance::{Campaign, CampaignClose, Canonical, Digest, EntryBody};

use crate::blobs::{apply, decode_delta};
use crate::error::{Result, TunerError};
use crate::lora::{adapter_init_seed, AdapterLayout, Adapters};
use crate::model::Weights;

/// The fine-tuning campaign (the one with a base campaign or a sketch) and
/// its close, from a list of entries.
pub fn find_fine_tune(entries: &[EntryBody]) -> Result<(Campaign, CampaignClose)> {
    let campaign = entries
        .iter()
        .rev()
        .find_map(|e| match e {
            EntryBody::Campaign(c) if c.sketch.dim > 0 => Some(c.clone()),
            _ => None,
        })
        .ok_or_else(|| TunerError::Config("no fine-tuning campaign among the entries".into()))?;
    let d = campaign.digest();
    let close = entries
        .iter()
        .find_map(|e| match e {
            EntryBody::CampaignClose(c) if c.campaign == d => Some(c.clone()),
            _ => None,
        })
        .ok_or_else(|| TunerError::Config("the campaign was not closed".into()))?;
    Ok((campaign, close))
}

/// The delta blob an entry of `campaign` names, if it is a training event.
pub fn delta_of(e: &EntryBody, campaign: &Campaign) -> Option<Digest> {
    let d = campaign.digest();
    e.event()
        .filter(|ev| ev.link.campaign == d)
        .map(|ev| *ev.delta_blob)
}

/// Base + initial adapters + every delta blob, in order.
pub fn rebuild(
    layout: Arc<AdapterLayout>,
    campaign: &Campaign,
    base: &Weights,
    deltas: &[Vec<u8>],
) -> Result<Adapters> {
    if base.digest() != campaign.base_model.state {
        return Err(TunerError::DigestMismatch {
            what: "base weights".into(),
            expected: campaign.base_model.state,
            found: base.digest(),
        });
    }
    let mut a = Adapters::init(layout, adapter_init_seed(campaign.sketch.seed));
    for d in deltas {
        let (_, _, pd) = decode_delta(d)?;
        apply(&mut a, &pd)?;
    }
    Ok(a)
}
