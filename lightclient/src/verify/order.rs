//! A campaign's data order, recomputed from the log: the considered set
//! its recipe commits, the seed from the consortium's checkpoint of the
//! block that committed it, and the accounting of every position its
//! records draw (`provenance::order`). The regulator's and the
//! rights-holder's predicates report what it finds.

use std::collections::BTreeMap;

use provenance::admission::{admit_committed, AdmissionContext};
use provenance::order::{Accounting, ConsideredSource, Order, OrderFault, OrderSeed};
use provenance::{
    Canonical, Digest, EffectiveRevocation, EntryBody, ObjectKind, PolicyArtifact, RefusalReason,
    SignedCheckpoint, Timestamp,
};
use serde::Deserialize;

use super::{malformed, VerifiedCampaign, Verifier};
use crate::client::ClientError;
use crate::light::{answer, VerifyError};

/// The recipe formats whose blobs commit a considered set: a fine-tune's
/// and a base campaign's.
const RECIPES: [&str; 2] = ["govtune-recipe/v3", "govtune-base-recipe/v2"];
/// Largest recipe blob read.
const MAX_RECIPE_BYTES: usize = 1 << 20;

/// The part of a fine-tune's recipe blob the order needs.
#[derive(Deserialize)]
struct RecipeOrder {
    format: String,
    #[serde(default)]
    considered: Vec<ConsideredSource>,
}

/// What recomputing a campaign's order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderFinding {
    /// The campaign's recipe commits no considered set (no recipe, or an
    /// older format): its order is not accounted.
    NotCommitted(String),
    /// Every record accounts for its positions (and, if closed, the close
    /// names where the order stopped).
    Accounted {
        /// Positions drawn.
        drawn: u64,
        /// Checkpoint height whose signature seeds the order.
        seed_height: u64,
    },
    /// Records break the order: each fault with the log index of its
    /// record (or the close) and the record's position in the campaign's
    /// chain (the close: the chain's length).
    Broken(Vec<(u64, usize, OrderFault)>),
}

impl Verifier {
    /// The consortium's checkpoint of the block that committed log entry
    /// `index`: the first height whose checkpoint's log holds the entry
    /// (the one below it must not), found by bisection over heights up to
    /// `under`'s, each checkpoint's signature checked.
    pub fn commit_checkpoint(
        &self,
        index: u64,
        under: &SignedCheckpoint,
    ) -> Result<SignedCheckpoint, VerifyError> {
        if index >= under.checkpoint.size {
            return Err(malformed(format!(
                "entry {index} is not under checkpoint {}",
                under.checkpoint.height
            )));
        }
        let at = |h: u64| self.light.checkpoint_at(&self.node, h);
        let (mut lo, mut hi) = (1u64, under.checkpoint.height);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid)?.checkpoint.size > index {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let c = if lo == under.checkpoint.height {
            under.clone()
        } else {
            at(lo)?
        };
        if c.checkpoint.size <= index {
            return Err(malformed(format!(
                "no checkpoint up to height {lo} holds entry {index}"
            )));
        }
        if lo > 1 && at(lo - 1)?.checkpoint.size > index {
            return Err(malformed(format!(
                "the checkpoints at heights {} and {lo} are not in order",
                lo - 1
            )));
        }
        Ok(c)
    }

    /// Recomputes campaign `vc`'s order and accounts for its records.
    pub fn order(&mut self, vc: &VerifiedCampaign) -> Result<OrderFinding, VerifyError> {
        let c = &vc.campaign;
        if c.recipe == Digest::ZERO {
            return Ok(OrderFinding::NotCommitted(
                "the campaign published no recipe".into(),
            ));
        }
        let bytes = answer(self.node.get_bytes(&format!("/v1/blobs/{}", c.recipe.to_hex())))?;
        if bytes.len() > MAX_RECIPE_BYTES
            || provenance::digest::tagged_hash(ObjectKind::Blob, &bytes) != c.recipe
        {
            return Err(malformed("the recipe blob the node served is not the campaign's"));
        }
        let recipe: RecipeOrder = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return Ok(OrderFinding::NotCommitted(format!(
                    "the recipe is not a fine-tune's: {e}"
                )))
            }
        };
        if !RECIPES.contains(&recipe.format.as_str()) {
            return Ok(OrderFinding::NotCommitted(format!(
                "the recipe ({}) commits no considered set",
                recipe.format
            )));
        }
        let cp = vc.checkpoint.clone();
        let seed_cp = self.commit_checkpoint(vc.campaign_index, &cp)?;
        if seed_cp.signature.is_empty() {
            return Err(malformed(format!(
                "the checkpoint at height {} that seeds the campaign's order has no consortium signature",
                seed_cp.checkpoint.height
            )));
        }
        let seed = OrderSeed::from_checkpoint(&c.digest(), seed_cp.signature.as_slice());
        let order = match Order::new(&recipe.considered, seed) {
            Ok(o) => o,
            Err(e) => return Err(malformed(format!("the campaign's recipe: {e}"))),
        };
        // What admission needs of each considered source and policy, proved.
        let mut sources = BTreeMap::new();
        let mut revocations = Vec::new();
        for s in &recipe.considered {
            match self.node.source(&s.source) {
                Ok(a) => {
                    if a.id != s.source || provenance::Canonical::digest(&a.manifest) != s.source {
                        return Err(malformed(format!(
                            "the answer about source {} is another's",
                            s.source
                        )));
                    }
                    let (_, e) = self.ensure(&cp, &s.source)?;
                    let EntryBody::Manifest(m) = e.body else {
                        return Err(malformed(format!("{} is not a source", s.source)));
                    };
                    if let Some(effective) = a.revoked {
                        revocations.push(EffectiveRevocation {
                            source: s.source,
                            effective,
                        });
                    }
                    sources.insert(s.source, m);
                }
                // Never registered: refused for its signature.
                Err(ClientError::Status { status: 404, .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut policies: BTreeMap<Digest, PolicyArtifact> = BTreeMap::new();
        for p in vc
            .chain
            .iter()
            .filter_map(|b| b.record_policy())
            .chain([&c.policy])
        {
            if policies.contains_key(p) {
                continue;
            }
            let (_, e) = self.ensure(&cp, p)?;
            let EntryBody::Policy(pol) = e.body else {
                return Err(malformed(format!("{p} is not a policy")));
            };
            policies.insert(*p, pol);
        }
        let keyring = self.light.keyring().clone();
        let mut acc = Accounting::new(order);
        let mut faults = Vec::new();
        let close = vc
            .record
            .as_ref()
            .map(|r| EntryBody::CampaignClose(r.close.clone()));
        let records = vc
            .chain
            .iter()
            .zip(&vc.chain_index)
            .map(|(b, i)| (b, *i))
            .chain(close.as_ref().zip(vc.close_index));
        for (k, (b, index)) in records.enumerate() {
            let policy = policies.get(b.record_policy().unwrap_or(&c.policy));
            let mut reason_of = |source: &Digest, time: Timestamp| -> Option<RefusalReason> {
                let (Some(p), Some(m)) = (policy, sources.get(source)) else {
                    return Some(RefusalReason::BadSignature);
                };
                let ctx = AdmissionContext {
                    keyring: &keyring,
                    policy: p,
                    campaign: c,
                    revocations: &revocations,
                    time,
                };
                admit_committed(&ctx, m).refusal()
            };
            faults.extend(
                acc.record_all(b, &mut reason_of)
                    .into_iter()
                    .map(|f| (index, k, f)),
            );
        }
        if !faults.is_empty() {
            return Ok(OrderFinding::Broken(faults));
        }
        Ok(OrderFinding::Accounted {
            drawn: acc.drawn(),
            seed_height: seed_cp.checkpoint.height,
        })
    }
}
