//! What each authority checks before it signs its section of an entry
//! (docs/architecture.md, "Co-signing"). Pure functions of the entry, the committed
//! ledger state and the genesis keys, so every node of a role reaches the
//! same verdict.
//!
//! * data source: each of *its* examples is in *its* registered source
//!   (the inclusion proof verifies under the signed example root), the
//!   source is not revoked (at all: a revoked source gets no new
//!   signature, whatever the step time says), was valid at the step time,
//!   and it allows
//!   the campaign's purpose;
//! * governance: the policy named is the campaign's or a successor of it,
//!   and re-running the admission evaluator on every example gives exactly
//!   the decision recorded; a refusal's reason is re-derived the same way;
//! * operator: signs only the measurements its own tools submitted.

use provenance::admission::{admit_committed, check_memorisation, AdmissionContext};
use provenance::crypto::CoSignature;
use provenance::event::ExampleRecord;
use provenance::{
    Admission, AuthorityId, Campaign, Digest, EntryBody, KeyRing, LedgerState, LedgerView, RefusalReason,
    Role, Timestamp,
};

/// What a co-signer needs besides the entry.
pub struct CheckContext<'a> {
    /// Genesis keys.
    pub keyring: &'a KeyRing,
    /// Committed state.
    pub state: &'a LedgerState,
    /// The committed signature of a registered manifest.
    pub manifest_signature: &'a dyn Fn(&Digest) -> Option<CoSignature>,
    /// This node's clock (ms).
    pub now: Timestamp,
    /// Largest tolerated clock difference (ms).
    pub max_skew: u64,
}

/// Why this node's authority will not sign its section. The text is the
/// reason gossiped to the consortium and shown on `/v1/events/{digest}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoSignRefusal {
    /// An operator is offered an entry its own tools did not submit.
    #[error("an operator signs only the entries its own tools submitted")]
    NotOwnMeasurement,
    /// A training event's delta is not what it states (`tuner::witness`).
    #[error("effect: {0}")]
    Effect(String),
    /// A campaign record does not account for the campaign's data order
    /// (`provenance::order`).
    #[error("order: {0}")]
    Order(String),
    /// This auditor's ticket selects the record and its replay refused it
    /// or could not be run (`provenance::audit`).
    #[error("replay audit: {0}")]
    Replay(String),
    /// A registration (manifest, policy, campaign, revocation) its own
    /// tools did not submit.
    #[error("an authority registers only what its own tools submitted")]
    NotOwnRegistration,
    /// A data-source authority is offered something other than an event.
    #[error("a data-source authority co-signs only step and composite events")]
    NotAnEvent,
    /// Governance is offered something other than a campaign record.
    #[error("governance co-signs only campaign records")]
    NotACampaignRecord,
    /// The step time is ahead of this node's clock.
    #[error("step time {time} is ahead of this node's clock {now}")]
    TimeAhead {
        /// The step time.
        time: Timestamp,
        /// This node's clock.
        now: Timestamp,
    },
    /// The step time is too far behind for the entry to commit.
    #[error("step time {time} is more than {oldest} ms behind this node's clock {now}: too late to commit")]
    TooLate {
        /// The step time.
        time: Timestamp,
        /// The oldest accepted age (ms).
        oldest: u64,
        /// This node's clock.
        now: Timestamp,
    },
    /// The campaign is not registered.
    #[error("campaign {} is not registered", .0.short())]
    UnknownCampaign(Digest),
    /// A source is not registered.
    #[error("source {} is not registered", .0.short())]
    UnknownSource(Digest),
    /// The policy is not registered.
    #[error("policy {} is not registered", .0.short())]
    UnknownPolicy(Digest),
    /// A registered manifest's signature is missing from the log.
    #[error("the signature of source {} is not in the log", .0.short())]
    ManifestSignatureMissing(Digest),
    /// An example is not in the source it claims (its proof fails).
    #[error("example {index} is not in source {} ({title}): {why}", .source_id.short())]
    NotInSource {
        /// Example index.
        index: u64,
        /// Source id.
        source_id: Digest,
        /// Source title.
        title: String,
        /// Why the proof fails.
        why: String,
    },
    /// The source is revoked.
    #[error("source {} was revoked at {at}", .source_id.short())]
    Revoked {
        /// Source id.
        source_id: Digest,
        /// When the revocation took effect.
        at: Timestamp,
    },
    /// The source is not valid at the step time.
    #[error("source {} is not valid at step time {time}", .source_id.short())]
    OutsideValidity {
        /// Source id.
        source_id: Digest,
        /// The step time.
        time: Timestamp,
    },
    /// The source does not allow the campaign's purpose.
    #[error("source {} does not allow purpose {purpose}", .source_id.short())]
    PurposeNotAllowed {
        /// Source id.
        source_id: Digest,
        /// The campaign's purpose.
        purpose: String,
    },
    /// None of the event's examples is of this authority's sources.
    #[error("no example of this authority's sources is in the event")]
    NoneOfMine,
    /// The policy is neither the campaign's nor a successor of it.
    #[error("policy {} is neither the campaign's policy nor a successor signed by governance", .0.short())]
    PolicyNotDescended(Digest),
    /// A recorded admission decision differs from the policy's.
    #[error("example {index} of source {}: the recorded depth or routing differs from the policy's", .source_id.short())]
    DecisionDiffers {
        /// Example index.
        index: u64,
        /// Source id.
        source_id: Digest,
    },
    /// An example the policy refuses was trained on.
    #[error("example {index} of source {} must be refused ({reason}): {detail}", .source_id.short())]
    MustBeRefused {
        /// Example index.
        index: u64,
        /// Source id.
        source_id: Digest,
        /// The policy's reason.
        reason: RefusalReason,
        /// Its detail.
        detail: String,
    },
    /// A memorisation refusal without the rolled-back step's measurement.
    #[error("a memorisation refusal must carry the rolled-back step's measurement")]
    MemorisationWithoutMeasurement,
    /// A memorisation refusal whose signals are all under the thresholds.
    #[error("no memorisation signal exceeds the policy's threshold")]
    NoMemorisationSignal,
    /// A step or composite whose memorisation signals exceed the policy's
    /// thresholds: the policy wants it rolled back and recorded as a
    /// refusal, not committed.
    #[error("its memorisation signal breaks the policy ({0}): the step must be rolled back and refused, not committed")]
    MemorisationNotRolledBack(String),
    /// A refusal names another reason than the policy gives.
    #[error("source {} is refused for {actual}, not {claimed}", .source_id.short())]
    WrongReason {
        /// Source id.
        source_id: Digest,
        /// The policy's reason.
        actual: RefusalReason,
        /// The refusal's reason.
        claimed: RefusalReason,
    },
    /// A refusal of an admissible source.
    #[error("source {} is admissible: refusing it for {claimed} is wrong", .source_id.short())]
    Admissible {
        /// Source id.
        source_id: Digest,
        /// The refusal's reason.
        claimed: RefusalReason,
    },
}

use CoSignRefusal as R;

/// Checks the part of `body` that authority `me` (of `role`) must vouch
/// for; `Err` carries the refusal reason sent to the consortium.
pub fn check_section(
    role: Role,
    me: &AuthorityId,
    body: &EntryBody,
    ctx: &CheckContext<'_>,
) -> Result<(), CoSignRefusal> {
    match role {
        Role::DataSource => check_sources(me, body, ctx),
        Role::Governance => check_governance(body, ctx),
        Role::Operator => Err(R::NotOwnMeasurement),
    }
}

fn event_parts(body: &EntryBody) -> Option<(&Digest, &Digest, &[ExampleRecord], Timestamp)> {
    body.event()
        .map(|e| (&e.link.campaign, e.policy, e.records, e.step_time))
}

fn campaign<'a>(ctx: &'a CheckContext<'_>, id: &Digest) -> Result<&'a Campaign, CoSignRefusal> {
    ctx.state.campaign(id).ok_or(R::UnknownCampaign(*id))
}

/// How close to [`crate::ledger::MAX_EVENT_AGE_MS`] a step time may be
/// when signed: an event signed later could no longer enter a block.
const SIGNING_MARGIN_MS: u64 = 30_000;

fn check_time(ctx: &CheckContext<'_>, t: Timestamp) -> Result<(), CoSignRefusal> {
    if t.0 > ctx.now.0.saturating_add(ctx.max_skew) {
        return Err(R::TimeAhead {
            time: t,
            now: ctx.now,
        });
    }
    let oldest = crate::ledger::MAX_EVENT_AGE_MS - SIGNING_MARGIN_MS;
    if ctx.now.0 > t.0.saturating_add(oldest) {
        return Err(R::TooLate {
            time: t,
            oldest,
            now: ctx.now,
        });
    }
    Ok(())
}

fn check_sources(me: &AuthorityId, body: &EntryBody, ctx: &CheckContext<'_>) -> Result<(), CoSignRefusal> {
    let Some((campaign_id, _, records, time)) = event_parts(body) else {
        return Err(R::NotAnEvent);
    };
    check_time(ctx, time)?;
    let c = campaign(ctx, campaign_id)?;
    let mut mine = 0usize;
    for r in records {
        let s = ctx
            .state
            .source_state(&r.source)
            .ok_or(R::UnknownSource(r.source))?;
        if &s.manifest.authority != me {
            continue;
        }
        mine += 1;
        s.manifest
            .verify_example(r.index, &r.example_hash, &r.proof)
            .map_err(|e| R::NotInSource {
                index: r.index,
                source_id: r.source,
                title: s.manifest.title.clone(),
                why: e.to_string(),
            })?;
        if let Some(at) = s.revoked {
            // Whatever the step time claims: nothing more of a revoked
            // source is signed.
            return Err(R::Revoked {
                source_id: r.source,
                at,
            });
        }
        if !s.manifest.valid_at(time) {
            return Err(R::OutsideValidity {
                source_id: r.source,
                time,
            });
        }
        if !s.manifest.purposes.contains(&c.purpose) {
            return Err(R::PurposeNotAllowed {
                source_id: r.source,
                purpose: c.purpose.to_string(),
            });
        }
    }
    if mine == 0 {
        return Err(R::NoneOfMine);
    }
    Ok(())
}

/// Whether `policy` is `from` or a successor of it (by supersession).
fn policy_descends(state: &LedgerState, from: &Digest, policy: &Digest) -> bool {
    let walk = provenance::policy::descends_from(from, policy, &mut Default::default(), |d| {
        Ok::<_, std::convert::Infallible>(state.policy(d).and_then(|p| p.supersedes))
    });
    matches!(walk, Ok(true))
}

fn admission_of(
    ctx: &CheckContext<'_>,
    c: &Campaign,
    policy: &Digest,
    source: &Digest,
    time: Timestamp,
) -> Result<Option<Admission>, CoSignRefusal> {
    let p = ctx.state.policy(policy).ok_or(R::UnknownPolicy(*policy))?;
    let Some(m) = ctx.state.source(source) else {
        return Ok(None);
    };
    // Committed: its signature was checked when its block was.
    (ctx.manifest_signature)(source).ok_or(R::ManifestSignatureMissing(*source))?;
    let revocations = ctx.state.revocations();
    let a = AdmissionContext {
        keyring: ctx.keyring,
        policy: p,
        campaign: c,
        revocations: &revocations,
        time,
    };
    Ok(Some(admit_committed(&a, m)))
}

/// What admission says of a committed source for campaign `c` under
/// `policy` at `time`: `None` admits it; an unregistered source can only be
/// refused for its signature ([`provenance::order::ReasonOf`]).
pub(crate) fn refusal_reason(
    keyring: &KeyRing,
    state: &LedgerState,
    c: &Campaign,
    policy: &Digest,
    source: &Digest,
    time: Timestamp,
) -> Option<RefusalReason> {
    let (Some(p), Some(m)) = (state.policy(policy), state.source(source)) else {
        return Some(RefusalReason::BadSignature);
    };
    let revocations = state.revocations();
    let a = AdmissionContext {
        keyring,
        policy: p,
        campaign: c,
        revocations: &revocations,
        time,
    };
    admit_committed(&a, m).refusal()
}

fn check_governance(body: &EntryBody, ctx: &CheckContext<'_>) -> Result<(), CoSignRefusal> {
    let (Some(link), Some(policy)) = (body.chain_link(), body.record_policy()) else {
        return Err(R::NotACampaignRecord);
    };
    let campaign_id = &link.campaign;
    let c = campaign(ctx, campaign_id)?;
    if !policy_descends(ctx.state, &c.policy, policy) {
        return Err(R::PolicyNotDescended(*policy));
    }
    if let Some((_, _, records, time)) = event_parts(body) {
        check_time(ctx, time)?;
        if let Some(e) = body.event() {
            let p = ctx.state.policy(policy).ok_or(R::UnknownPolicy(*policy))?;
            if let Some(detail) = check_memorisation(p, &e.measurement.signals) {
                return Err(R::MemorisationNotRolledBack(detail));
            }
        }
        // One admission (and one manifest signature check) per source, not
        // per record.
        let mut admissions: std::collections::HashMap<Digest, Option<Admission>> = Default::default();
        for r in records {
            let a = match admissions.get(&r.source) {
                Some(a) => a.clone(),
                None => {
                    let a = admission_of(ctx, c, policy, &r.source, time)?;
                    admissions.insert(r.source, a.clone());
                    a
                }
            };
            match a {
                Some(Admission::Admit(d)) if d == r.decision => {}
                Some(Admission::Admit(_)) => {
                    return Err(R::DecisionDiffers {
                        index: r.index,
                        source_id: r.source,
                    })
                }
                Some(Admission::Refuse { reason, detail }) => {
                    return Err(R::MustBeRefused {
                        index: r.index,
                        source_id: r.source,
                        reason,
                        detail,
                    })
                }
                None => return Err(R::UnknownSource(r.source)),
            }
        }
        return Ok(());
    }
    if let EntryBody::Refusal(r) = body {
        if r.reason == RefusalReason::Memorisation {
            let p = ctx.state.policy(policy).ok_or(R::UnknownPolicy(*policy))?;
            let m = r.measurement.as_ref().ok_or(R::MemorisationWithoutMeasurement)?;
            if check_memorisation(p, &m.signals).is_none() {
                return Err(R::NoMemorisationSignal);
            }
            return Ok(());
        }
        for e in &r.examples {
            match admission_of(ctx, c, policy, &e.source, r.time)? {
                Some(Admission::Refuse { reason, .. }) if reason == r.reason => {}
                // An unregistered source can only have been refused for
                // its signature (its manifest never made it to the log).
                None if r.reason == RefusalReason::BadSignature => {}
                Some(Admission::Refuse { reason, .. }) => {
                    return Err(R::WrongReason {
                        source_id: e.source,
                        actual: reason,
                        claimed: r.reason,
                    })
                }
                Some(Admission::Admit(_)) => {
                    return Err(R::Admissible {
                        source_id: e.source,
                        claimed: r.reason,
                    })
                }
                None => return Err(R::UnknownSource(e.source)),
            }
        }
    }
    Ok(())
}
