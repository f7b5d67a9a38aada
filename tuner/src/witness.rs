//! What a co-signer checks of a fine-tuning event's *effect* before it
//! signs: the delta blob against the event's measurement, the campaign's
//! state chain and its admitted examples' routing.
//!
//! A [`CampaignWitness`] holds the adapters' state after the campaign's
//! last committed event (the initial adapters the campaign record fixes,
//! then every committed delta). For an offered event it applies the delta
//! to a copy and checks, without training anything:
//!
//! - the blob is the one the event names and covers the event's steps,
//!   which start no earlier than the next uncommitted step (an old step
//!   re-offered under a new link is refused);
//! - every piece the delta changes is routed for at least one of the
//!   event's admitted examples (their routing masks encode depth too):
//!   every other piece stays bit-identical;
//! - each changed parameter block's XOR-delta digest and change norm are
//!   what the measurement states, bit for bit, and no block is missing or
//!   extra;
//! - the resulting model-state digest is the measurement's.
//!
//! A base campaign ([`BaseWitness`]) is followed from the initial weights
//! its recipe gives and checked the same way, without routing (it trains
//! every weight).
//!
//! The checks cost one pass over the changed pieces. They cannot see
//! whether the gradient was computed honestly (clipping, the examples'
//! actual content): that needs replaying the step.

use std::sync::Arc;

use provenance::{Campaign, Digest, EventView};

use crate::blobs::{apply, blob_digest, decode_delta, PieceDelta};
use crate::campaign::block_measures;
use crate::error::TunerError;
use crate::lora::{adapter_init_seed, AdapterLayout, Adapters};
use crate::model::Weights;
use crate::pretrain::{base_block_measures, BaseRecipe};
use crate::recipe::Recipe;

/// Why a co-signer refuses an event's effect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepFault {
    /// The delta blob is not the one the event names.
    #[error("the delta blob hashes to {found}, the event names {named}")]
    BlobMismatch {
        /// What the event names.
        named: Digest,
        /// What the blob hashes to.
        found: Digest,
    },
    /// The delta blob does not decode or does not fit the layout.
    #[error("malformed delta: {0}")]
    Malformed(String),
    /// The delta covers other steps than the event.
    #[error("the delta covers steps {found_first}..={found_last}, the event {first}..={last}")]
    StepRange {
        /// The event's first step.
        first: u64,
        /// The event's last step.
        last: u64,
        /// The delta's first step.
        found_first: u64,
        /// The delta's last step.
        found_last: u64,
    },
    /// The event starts before the next uncommitted step: an old step.
    #[error("the event starts at step {first}, but steps before {next} are committed")]
    Stale {
        /// The event's first step.
        first: u64,
        /// The next uncommitted step.
        next: u64,
    },
    /// The delta changes a piece no admitted example of the event may reach.
    #[error("the delta changes {piece}, which no admitted example of the event is routed to")]
    RoutedOut {
        /// The piece's name.
        piece: String,
    },
    /// A block's measurement is not what the delta shows.
    #[error("block {block}: {what}")]
    Measurement {
        /// The block.
        block: u32,
        /// What differs.
        what: String,
    },
    /// The state after the delta is not the measurement's.
    #[error("the model state after the delta is {found}, the measurement states {stated}")]
    State {
        /// The stated digest.
        stated: Digest,
        /// The recomputed one.
        found: Digest,
    },
}

/// A campaign's adapters as its committed events left them.
#[derive(Debug, Clone)]
pub struct CampaignWitness {
    layout: Arc<AdapterLayout>,
    heads: usize,
    base_state: Digest,
    adapters: Adapters,
    next_step: u64,
}

/// The state an offered event's delta yields, once checked.
#[derive(Debug, Clone)]
pub struct Checked {
    after: Adapters,
    next_step: u64,
}

/// What an offered base-campaign event's delta yields, once checked.
#[derive(Debug, Clone)]
pub struct CheckedBase {
    after: Weights,
    next_step: u64,
}

/// Either kind of campaign the tuner runs, followed by a co-signer.
#[derive(Debug, Clone)]
pub enum Witness {
    /// A fine-tune: LoRA adapters over a fixed base.
    FineTune(CampaignWitness),
    /// A base campaign: every weight of the model trains.
    Base(BaseWitness),
}

/// A checked event of either kind.
#[derive(Debug, Clone)]
pub enum CheckedEvent {
    /// Of a fine-tune.
    FineTune(Checked),
    /// Of a base campaign.
    Base(CheckedBase),
}

impl Witness {
    /// The witness of `campaign` from its recipe blob (a fine-tune's
    /// [`Recipe`] or a base campaign's [`BaseRecipe`]).
    pub fn new(campaign: &Campaign, recipe: &[u8]) -> crate::error::Result<Self> {
        match Recipe::from_bytes(recipe) {
            Ok(r) => Ok(Self::FineTune(CampaignWitness::new(campaign, &r)?)),
            Err(_) => Ok(Self::Base(BaseWitness::new(
                campaign,
                &BaseRecipe::from_bytes(recipe)?,
            )?)),
        }
    }

    /// The considered set a recipe blob of either kind commits (its
    /// campaign's data order is drawn over it, [`provenance::order`]).
    pub fn considered(recipe: &[u8]) -> crate::error::Result<Vec<provenance::order::ConsideredSource>> {
        match Recipe::from_bytes(recipe) {
            Ok(r) => Ok(r.considered),
            Err(_) => Ok(BaseRecipe::from_bytes(recipe)?.considered),
        }
    }

    /// Checks an offered event (see [`CampaignWitness::check`]).
    pub fn check(&self, event: &EventView<'_>, delta_blob: &[u8]) -> Result<CheckedEvent, StepFault> {
        match self {
            Self::FineTune(w) => w.check(event, delta_blob).map(CheckedEvent::FineTune),
            Self::Base(w) => w.check(event, delta_blob).map(CheckedEvent::Base),
        }
    }

    /// Applies a checked event once it committed.
    pub fn commit(&mut self, checked: CheckedEvent) {
        match (self, checked) {
            (Self::FineTune(w), CheckedEvent::FineTune(c)) => w.commit(c),
            (Self::Base(w), CheckedEvent::Base(c)) => w.commit(c),
            // A check of the other kind cannot come from this witness.
            _ => {}
        }
    }

    /// Applies a committed event's delta.
    pub fn follow(&mut self, event: &EventView<'_>, delta_blob: &[u8]) -> Result<(), StepFault> {
        match self {
            Self::FineTune(w) => w.follow(event, delta_blob),
            Self::Base(w) => {
                let c = w.check_shape(event, delta_blob)?;
                w.commit(c);
                Ok(())
            }
        }
    }

    /// The committed state's digest.
    pub fn state(&self) -> Digest {
        match self {
            Self::FineTune(w) => w.state(),
            Self::Base(w) => w.weights.digest(),
        }
    }
}

/// A base campaign's weights as its committed events left them. Its
/// events are checked like a fine-tune's, except routing: a base campaign
/// trains every weight (its policy gives full depth).
#[derive(Debug, Clone)]
pub struct BaseWitness {
    weights: Weights,
    names: Vec<String>,
    next_step: u64,
}

impl BaseWitness {
    /// The witness before the first event: [`Weights::init`] from the
    /// recipe, which must give the campaign's starting state.
    pub fn new(campaign: &Campaign, recipe: &BaseRecipe) -> crate::error::Result<Self> {
        if recipe.model.architecture_digest() != campaign.architecture {
            return Err(TunerError::DigestMismatch {
                what: "base recipe architecture".into(),
                expected: campaign.architecture,
                found: recipe.model.architecture_digest(),
            });
        }
        let weights = Weights::init(recipe.model, recipe.init_seed)?;
        if weights.digest() != campaign.base_model.state {
            return Err(TunerError::DigestMismatch {
                what: "initial weights".into(),
                expected: campaign.base_model.state,
                found: weights.digest(),
            });
        }
        Ok(Self {
            names: weights.tensors.keys().cloned().collect(),
            weights,
            next_step: 0,
        })
    }

    /// The blob, its steps and its tensors, and the weights it yields
    /// (what a committed event is followed with).
    fn check_shape(&self, event: &EventView<'_>, delta_blob: &[u8]) -> Result<CheckedBase, StepFault> {
        let (_, last, pieces) = open_named(event, delta_blob)?;
        let after = self.apply(&pieces)?;
        Ok(CheckedBase {
            after,
            next_step: self.next_step.max(last + 1),
        })
    }

    fn apply(&self, pieces: &[PieceDelta]) -> Result<Weights, StepFault> {
        let mut after = self.weights.clone();
        let mut tensors: Vec<&mut Vec<f32>> = after.tensors.values_mut().map(|(_, v)| v).collect();
        for d in pieces {
            let t = tensors
                .get_mut(d.piece as usize)
                .ok_or_else(|| StepFault::Malformed(format!("tensor {} is not in the model", d.piece)))?;
            if t.len() != d.xor.len() {
                return Err(StepFault::Malformed(format!(
                    "tensor {} has {} values, the delta {}",
                    d.piece,
                    t.len(),
                    d.xor.len()
                )));
            }
            for (x, w) in t.iter_mut().zip(&d.xor) {
                *x = f32::from_bits(x.to_bits() ^ w);
            }
        }
        Ok(after)
    }

    /// Checks an offered event: blob, steps, per-block digests and norms,
    /// state chain.
    pub fn check(&self, event: &EventView<'_>, delta_blob: &[u8]) -> Result<CheckedBase, StepFault> {
        let (last, pieces) = open_offered(event, delta_blob, self.next_step)?;
        let after = self.apply(&pieces)?;
        let before: Vec<&Vec<f32>> = self.weights.tensors.values().map(|(_, v)| v).collect();
        let after_v: Vec<&Vec<f32>> = after.tensors.values().map(|(_, v)| v).collect();
        let measured = base_block_measures(
            &self.names,
            self.weights.config.layers,
            &pieces,
            &before,
            &after_v,
        );
        check_blocks(&event.measurement.blocks, &measured)?;
        let state = after.digest();
        if state != event.measurement.model_state {
            return Err(StepFault::State {
                stated: event.measurement.model_state,
                found: state,
            });
        }
        Ok(CheckedBase {
            after,
            next_step: last + 1,
        })
    }

    /// Applies a checked event once it committed.
    pub fn commit(&mut self, checked: CheckedBase) {
        self.weights = checked.after;
        self.next_step = checked.next_step;
    }
}

impl CampaignWitness {
    /// The witness of a fine-tuning campaign before its first event, from
    /// its recipe (checked against the campaign).
    pub fn new(campaign: &Campaign, recipe: &Recipe) -> crate::error::Result<Self> {
        recipe.check_against(campaign)?;
        let layout = Arc::new(recipe.settings.layout()?);
        Ok(Self {
            heads: recipe.settings.model.heads,
            base_state: campaign.base_model.state,
            adapters: Adapters::init(layout.clone(), adapter_init_seed(campaign.sketch.seed)),
            layout,
            next_step: 0,
        })
    }

    /// The first step an event may start at.
    pub fn next_step(&self) -> u64 {
        self.next_step
    }

    /// The committed adapters (the state an auditor replays the next
    /// record from).
    pub fn adapters(&self) -> &Adapters {
        &self.adapters
    }

    /// The state digest of the committed adapters.
    pub fn state(&self) -> Digest {
        self.adapters.state_digest(&self.base_state)
    }

    /// Checks an offered event with its delta blob against the committed
    /// state; on success returns what [`CampaignWitness::commit`] takes
    /// once the event commits.
    pub fn check(&self, event: &EventView<'_>, delta_blob: &[u8]) -> Result<Checked, StepFault> {
        let (last, pieces) = open_offered(event, delta_blob, self.next_step)?;
        self.check_routing(event, &pieces)?;
        let mut after = self.adapters.clone();
        apply(&mut after, &pieces).map_err(|e| StepFault::Malformed(e.to_string()))?;
        let measured = block_measures(&self.layout, &pieces, &self.adapters, &after);
        check_blocks(&event.measurement.blocks, &measured)?;
        let state = after.state_digest(&self.base_state);
        if state != event.measurement.model_state {
            return Err(StepFault::State {
                stated: event.measurement.model_state,
                found: state,
            });
        }
        Ok(Checked {
            after,
            next_step: last + 1,
        })
    }

    /// Applies a committed event's delta (the ledger holds it: only that
    /// the blob is the one it names and fits the layout is checked).
    pub fn follow(&mut self, event: &EventView<'_>, delta_blob: &[u8]) -> Result<(), StepFault> {
        let (_, last, pieces) = open_named(event, delta_blob)?;
        let mut after = self.adapters.clone();
        apply(&mut after, &pieces).map_err(|e| StepFault::Malformed(e.to_string()))?;
        self.adapters = after;
        self.next_step = self.next_step.max(last + 1);
        Ok(())
    }

    /// Applies a checked event once it committed.
    pub fn commit(&mut self, checked: Checked) {
        self.adapters = checked.after;
        self.next_step = checked.next_step;
    }

    fn check_routing(&self, event: &EventView<'_>, pieces: &[PieceDelta]) -> Result<(), StepFault> {
        for d in pieces {
            let spec = self
                .layout
                .pieces
                .get(d.piece as usize)
                .ok_or_else(|| StepFault::Malformed(format!("piece {} is not in the layout", d.piece)))?;
            let reached = event.records.iter().any(|r| {
                let m = &r.decision.routing;
                m.allows(spec.unit(m.granularity, self.heads))
            });
            if !reached {
                return Err(StepFault::RoutedOut {
                    piece: spec.name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn check_blocks(
    stated: &[provenance::BlockMeasure],
    measured: &[provenance::BlockMeasure],
) -> Result<(), StepFault> {
    for m in measured {
        let Some(s) = stated.iter().find(|s| s.block == m.block) else {
            return Err(StepFault::Measurement {
                block: m.block,
                what: "changed by the delta but not measured".into(),
            });
        };
        if s.delta_digest != m.delta_digest {
            return Err(StepFault::Measurement {
                block: m.block,
                what: format!(
                    "delta digest {} stated, {} in the blob",
                    s.delta_digest, m.delta_digest
                ),
            });
        }
        if s.norm.to_bits() != m.norm.to_bits() {
            return Err(StepFault::Measurement {
                block: m.block,
                what: format!("norm {} stated, {} in the blob", s.norm, m.norm),
            });
        }
    }
    if let Some(s) = stated
        .iter()
        .find(|s| !measured.iter().any(|m| m.block == s.block))
    {
        return Err(StepFault::Measurement {
            block: s.block,
            what: "measured but not changed by the delta".into(),
        });
    }
    Ok(())
}

/// A delta blob that is the one `event` names, decoded: `(first, last,
/// pieces)`.
fn open_named(event: &EventView<'_>, delta_blob: &[u8]) -> Result<(u64, u64, Vec<PieceDelta>), StepFault> {
    let found = blob_digest(delta_blob);
    if found != *event.delta_blob {
        return Err(StepFault::BlobMismatch {
            named: *event.delta_blob,
            found,
        });
    }
    decode_delta(delta_blob).map_err(|e| StepFault::Malformed(e.to_string()))
}

/// An offered event's delta: the one it names, covering exactly its steps,
/// none before `next_step`, pieces in strictly increasing order. Returns
/// the last step and the pieces.
fn open_offered(
    event: &EventView<'_>,
    delta_blob: &[u8],
    next_step: u64,
) -> Result<(u64, Vec<PieceDelta>), StepFault> {
    let (first, last, pieces) = open_named(event, delta_blob)?;
    if (first, last) != (event.first_step, event.last_step) {
        return Err(StepFault::StepRange {
            first: event.first_step,
            last: event.last_step,
            found_first: first,
            found_last: last,
        });
    }
    if first < next_step {
        return Err(StepFault::Stale {
            first,
            next: next_step,
        });
    }
    if pieces.windows(2).any(|w| w[0].piece >= w[1].piece) {
        return Err(StepFault::Malformed(
            "pieces are not in strictly increasing order".into(),
        ));
    }
    Ok((last, pieces))
}
