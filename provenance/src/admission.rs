//! The admission evaluator: a pure, deterministic function from (manifest
//! and its signature, revocations, policy, campaign, step time) to
//! `Admit { depth profile, routing mask }` or `Refuse { reason }`.
//!
//! The tuner runs it before every step and governance re-runs the same code
//! when it co-signs, so both must reach the same answer from the same
//! inputs. Checks run in a fixed order and the first failure is the reason:
//!
//! 1. the manifest's signature, by a data-source authority (`bad-signature`);
//! 2. no revocation effective at or before the step time (`revoked`);
//! 3. the step time inside the validity window (`outside-validity-window`);
//! 4. the license admissible (`license`);
//! 5. the campaign's purpose both declared by the source and admissible
//!    under the policy (`purpose`);
//! 6. a positive depth for the source's data class (`depth`).
//!
//! Memorisation (`memorisation`) is judged after the step, from its
//! measured signals, by [`check_memorisation`].
//!
//! ## Depth and routing
//!
//! The model's parameter blocks in forward order are, per layer, attention
//! then MLP. Depth counts units back from the output: with
//! [`DepthResolution::Layer`] a unit is a layer, with
//! [`DepthResolution::Block`] a block (so depth 1 reaches only the last
//! layer's MLP). The routing mask is then drawn at the policy's routing
//! granularity: a block or head is routed when its block is within depth; a
//! layer only when both its blocks are (routing never exceeds depth).

use serde::{Deserialize, Serialize};

use crate::campaign::{Campaign, ModelShape};
use crate::crypto::{section_message, verify_cosignature, CoSignature, KeyRing, SignRequest};
use crate::event::{AdmitDecision, DepthProfile, MemorisationSignals, RoutingMask};
use crate::ids::{Role, Timestamp};
use crate::manifest::DataSourceManifest;
use crate::policy::{DepthResolution, PolicyArtifact, RoutingGranularity};
use crate::refusal::RefusalReason;
use crate::revocation::EffectiveRevocation;
use crate::Canonical;

/// Everything admission depends on besides the manifest.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionContext<'a> {
    /// Genesis keys.
    pub keyring: &'a KeyRing,
    /// The policy in force.
    pub policy: &'a PolicyArtifact,
    /// The campaign.
    pub campaign: &'a Campaign,
    /// Committed revocations with their effective times.
    pub revocations: &'a [EffectiveRevocation],
    /// The step time.
    pub time: Timestamp,
}

/// The evaluator's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Admission {
    /// The example may train, this deep, through these units.
    Admit(AdmitDecision),
    /// The example may not train.
    Refuse {
        /// Reason class.
        reason: RefusalReason,
        /// Detail for humans.
        detail: String,
    },
}

impl Admission {
    /// The refusal reason, if refused.
    pub fn refusal(&self) -> Option<RefusalReason> {
        match self {
            Admission::Admit(_) => None,
            Admission::Refuse { reason, .. } => Some(*reason),
        }
    }
}

fn refuse(reason: RefusalReason, detail: String) -> Admission {
    Admission::Refuse { reason, detail }
}

/// The message a data-source authority signs for its manifest.
pub fn manifest_sign_request(manifest: &DataSourceManifest) -> SignRequest {
    let d = manifest.digest();
    SignRequest {
        authority: manifest.authority.clone(),
        role: Role::DataSource,
        message: section_message(&d, Role::DataSource, &manifest.authority, &d),
    }
}

/// Decides whether examples of `manifest` may train under `ctx`.
pub fn admit(
    ctx: &AdmissionContext<'_>,
    manifest: &DataSourceManifest,
    signature: &CoSignature,
) -> Admission {
    use RefusalReason::*;
    if let Err(e) = manifest.check() {
        return refuse(BadSignature, format!("manifest is malformed: {e}"));
    }
    if let Err(e) = verify_cosignature(ctx.keyring, None, &[manifest_sign_request(manifest)], signature) {
        return refuse(BadSignature, e.to_string());
    }
    rules(ctx, manifest)
}

/// [`admit`] of a manifest the log committed: its co-signature was
/// verified before its block was final, so the same decision follows from
/// the rules alone (a co-signer judging a step against the committed state
/// saves a pairing per source).
pub fn admit_committed(ctx: &AdmissionContext<'_>, manifest: &DataSourceManifest) -> Admission {
    use RefusalReason::*;
    if let Err(e) = manifest.check() {
        return refuse(BadSignature, format!("manifest is malformed: {e}"));
    }
    rules(ctx, manifest)
}

/// The admission rules after the signature: revocation, validity window,
/// license, purpose, depth.
fn rules(ctx: &AdmissionContext<'_>, manifest: &DataSourceManifest) -> Admission {
    use RefusalReason::*;
    let source = manifest.source_id();
    if let Some(r) = ctx
        .revocations
        .iter()
        .filter(|r| r.source == source && r.effective <= ctx.time)
        .min_by_key(|r| r.effective)
    {
        return refuse(Revoked, format!("source revoked from {}", r.effective));
    }
    if !manifest.valid_at(ctx.time) {
        return refuse(
            OutsideValidityWindow,
            format!(
                "step time {} is outside [{}, {})",
                ctx.time, manifest.not_before, manifest.not_after
            ),
        );
    }
    if !ctx.policy.admissible_licenses.contains(&manifest.license) {
        return refuse(License, format!("license {} is not admissible", manifest.license));
    }
    let purpose = &ctx.campaign.purpose;
    if !manifest.purposes.contains(purpose) {
        return refuse(Purpose, format!("the source does not allow purpose {purpose}"));
    }
    if !ctx.policy.admissible_purposes.contains(purpose) {
        return refuse(Purpose, format!("the policy does not admit purpose {purpose}"));
    }
    let Some(rule) = ctx
        .policy
        .depth_rule(&manifest.data_class)
        .filter(|r| r.max_depth > 0)
    else {
        return refuse(
            Depth,
            format!("the policy gives data class {} no depth", manifest.data_class),
        );
    };
    let units = depth_units(ctx.policy.depth_resolution, ctx.campaign.shape);
    let depth = rule.max_depth.min(units);
    Admission::Admit(AdmitDecision {
        depth: DepthProfile {
            max_depth: depth,
            clip_norm: rule.clip_norm,
        },
        routing: routing_mask(ctx.policy, ctx.campaign.shape, depth),
    })
}

/// Number of depth units in a model under a resolution.
pub fn depth_units(resolution: DepthResolution, shape: ModelShape) -> u16 {
    match resolution {
        DepthResolution::Layer => shape.layers,
        DepthResolution::Block => shape.layers.saturating_mul(2),
    }
}

/// Whether parameter block `block` (forward order: layer `l` attention is
/// `2l`, MLP `2l + 1`) is within `depth` units of the output.
pub fn block_within_depth(resolution: DepthResolution, shape: ModelShape, depth: u16, block: u32) -> bool {
    let total = u32::from(shape.layers) * 2;
    let reach = match resolution {
        DepthResolution::Layer => u32::from(depth) * 2,
        DepthResolution::Block => u32::from(depth),
    };
    block < total && block + reach >= total
}

/// The routing mask for an example of depth `depth`.
pub fn routing_mask(policy: &PolicyArtifact, shape: ModelShape, depth: u16) -> RoutingMask {
    let res = policy.depth_resolution;
    let within = |block: u32| block_within_depth(res, shape, depth, block);
    let layers = u32::from(shape.layers);
    let heads = u32::from(shape.heads);
    match policy.routing_granularity {
        RoutingGranularity::Block => RoutingMask::from_fn(RoutingGranularity::Block, layers * 2, within),
        RoutingGranularity::Layer => RoutingMask::from_fn(RoutingGranularity::Layer, layers, |l| {
            within(2 * l) && within(2 * l + 1)
        }),
        RoutingGranularity::Head => {
            RoutingMask::from_fn(RoutingGranularity::Head, layers * (heads + 1), |u| {
                let (l, j) = (u / (heads + 1), u % (heads + 1));
                if j < heads {
                    within(2 * l)
                } else {
                    within(2 * l + 1)
                }
            })
        }
    }
}

/// Judges a step's measured memorisation signals against the policy's
/// thresholds: `Some(detail)` names the first signal over its threshold.
pub fn check_memorisation(policy: &PolicyArtifact, signals: &MemorisationSignals) -> Option<String> {
    let t = &policy.memorisation;
    let checks = [
        ("loss-drop z-score", signals.loss_drop_z, t.loss_drop_z),
        ("extraction", signals.extraction, t.extraction),
        ("canary exposure", signals.canary_exposure, t.canary_exposure),
    ];
    checks
        .iter()
        .find(|(_, v, limit)| v.is_nan() || v > limit)
        .map(|(name, v, limit)| format!("{name} {v} exceeds threshold {limit}"))
}
