//! The training recipe: what a trace or a rebuild needs besides the
//! ledger's entries.
//!
//! A [`provenance::Campaign`] names its model by architecture digest and
//! its base by weights digest, which are enough to *check* a model but not
//! to *run* one: the adapter layout, the optimiser's learning rate, the
//! sketch side and the base weights' bytes are in the recipe. The recipe is
//! a blob (JSON, see [`Recipe::to_bytes`]) whose digest the campaign
//! carries (`Campaign::recipe`), so a verifier fetches it from any node and
//! trusts it exactly as far as the digests agree:
//! [`Recipe::check_against`] ties it to the campaign (architecture, shape,
//! sketch dimension) and the base weights blob to the campaign's base state.
//!
//! The recipe also commits the campaign's considered set: every candidate
//! source and its example count, in the order the data order is drawn over
//! ([`provenance::order`]), and the digest of its audit context (the probe
//! windows and canaries governance replays memorisation signals with).

use serde::{Deserialize, Serialize};

use provenance::order::{ConsideredSource, MAX_CONSIDERED_SOURCES};
use provenance::{Campaign, Digest};

use crate::blobs::blob_digest;
use crate::campaign::TrainSettings;
use crate::error::{Result, TunerError};
use crate::model::Weights;
use crate::pergrad::Projection;

/// The format tag of a recipe blob.
pub const RECIPE_FORMAT: &str = "govtune-recipe/v3";

/// Largest recipe blob accepted (bytes).
pub const MAX_RECIPE_BYTES: usize = 64 * 1024 + MAX_CONSIDERED_SOURCES * 128;

/// A campaign's training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Always [`RECIPE_FORMAT`].
    pub format: String,
    /// The tuner's settings (model, adapters, optimiser, sketch side, ...).
    pub settings: TrainSettings,
    /// Blob digest of the base weights (safetensors bytes).
    pub base_weights: Digest,
    /// The candidate sources and their example counts.
    pub considered: Vec<ConsideredSource>,
    /// The digest of the campaign's audit context (its probe windows and
    /// canaries, [`crate::material::AuditContext`]), which governance is
    /// sent privately for replay audits; zero: none committed.
    pub audit_context: Digest,
}

impl Recipe {
    /// The recipe of a campaign with these settings over these base
    /// weights' safetensors bytes, drawing from `considered`.
    pub fn new(
        settings: TrainSettings,
        base_weights_bytes: &[u8],
        considered: Vec<ConsideredSource>,
    ) -> Self {
        Self {
            format: RECIPE_FORMAT.into(),
            settings,
            base_weights: blob_digest(base_weights_bytes),
            considered,
            audit_context: Digest::ZERO,
        }
    }

    /// The recipe committing `context` as its audit context.
    pub fn with_audit_context(mut self, context: &crate::material::AuditContext) -> Self {
        self.audit_context = context.digest();
        self
    }

    /// The blob bytes: JSON with fields in declaration order (serde_json's
    /// output is deterministic for these types, and `f32`s round-trip).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of numbers, strings and digests into a
        // Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The blob digest, `Campaign::recipe`.
    pub fn digest(&self) -> Digest {
        blob_digest(&self.to_bytes())
    }

    /// Parses a recipe blob. The bytes must re-encode to themselves, so a
    /// recipe has exactly one blob and one digest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| TunerError::Blob {
            kind: "recipe",
            reason,
        };
        if bytes.len() > MAX_RECIPE_BYTES {
            return Err(bad(format!("{} bytes, at most {MAX_RECIPE_BYTES}", bytes.len())));
        }
        let r: Recipe = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if r.format != RECIPE_FORMAT {
            return Err(bad(format!("format {:?}, expected {RECIPE_FORMAT:?}", r.format)));
        }
        r.settings.model.validate()?;
        provenance::order::Order::new(&r.considered, provenance::OrderSeed(Digest::ZERO))
            .map_err(|e| bad(e.to_string()))?;
        if r.to_bytes() != bytes {
            return Err(bad("not in canonical form".into()));
        }
        Ok(r)
    }

    /// Checks the recipe against the campaign that names it: architecture,
    /// shape and sketch dimension.
    pub fn check_against(&self, campaign: &Campaign) -> Result<()> {
        let s = &self.settings;
        if s.model.architecture_digest() != campaign.architecture {
            return Err(TunerError::DigestMismatch {
                what: "recipe architecture".into(),
                expected: campaign.architecture,
                found: s.model.architecture_digest(),
            });
        }
        if s.model.shape() != campaign.shape {
            return Err(TunerError::Config(
                "the recipe's model shape is not the campaign's".into(),
            ));
        }
        if s.sketch_seed != campaign.sketch.seed {
            return Err(TunerError::Config(
                "the recipe's sketch seed is not the campaign's".into(),
            ));
        }
        let dim = Projection::dim_for(&s.layout()?, s.sketch_side);
        if dim as u64 != u64::from(campaign.sketch.dim) {
            return Err(TunerError::Config(format!(
                "the recipe's sketch dimension is {dim}, the campaign's {}",
                campaign.sketch.dim
            )));
        }
        Ok(())
    }

    /// Loads the base weights from their blob bytes and checks them against
    /// the recipe and the campaign's base state.
    pub fn base(&self, campaign: &Campaign, bytes: &[u8]) -> Result<Weights> {
        let found = blob_digest(bytes);
        if found != self.base_weights {
            return Err(TunerError::DigestMismatch {
                what: "base weights blob".into(),
                expected: self.base_weights,
                found,
            });
        }
        let w = Weights::from_safetensors(self.settings.model, bytes)?;
        if w.digest() != campaign.base_model.state {
            return Err(TunerError::DigestMismatch {
                what: "base weights".into(),
                expected: campaign.base_model.state,
                found: w.digest(),
            });
        }
        Ok(w)
    }
}
