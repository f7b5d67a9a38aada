//! What each authority checks before it signs its section of an entry
//! (DESIGN.md, "Co-signing"). Pure functions of the entry, the committed
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

use provenance::admission::{admit, check_memorisation, AdmissionContext};
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

/// Checks the part of `body` that authority `me` (of `role`) must vouch
/// for; `Err` carries the refusal reason sent to the consortium.
pub fn check_section(
    role: Role,
    me: &AuthorityId,
    body: &EntryBody,
    ctx: &CheckContext<'_>,
) -> Result<(), String> {
    match role {
        Role::DataSource => check_sources(me, body, ctx),
        Role::Governance => check_governance(body, ctx),
        Role::Operator => Err("an operator signs only the entries its own tools submitted".into()),
    }
}

fn event_parts(body: &EntryBody) -> Option<(&Digest, &Digest, &[ExampleRecord], Timestamp)> {
    body.event()
        .map(|e| (&e.link.campaign, e.policy, e.records, e.step_time))
}

fn campaign<'a>(ctx: &'a CheckContext<'_>, id: &Digest) -> Result<&'a Campaign, String> {
    ctx.state
        .campaign(id)
        .ok_or_else(|| format!("campaign {} is not registered", id.short()))
}

/// How close to [`crate::ledger::MAX_EVENT_AGE_MS`] a step time may be
/// when signed: an event signed later could no longer enter a block.
const SIGNING_MARGIN_MS: u64 = 30_000;

fn check_time(ctx: &CheckContext<'_>, t: Timestamp) -> Result<(), String> {
    if t.0 > ctx.now.0.saturating_add(ctx.max_skew) {
        return Err(format!("step time {t} is ahead of this node's clock {}", ctx.now));
    }
    let oldest = crate::ledger::MAX_EVENT_AGE_MS - SIGNING_MARGIN_MS;
    if ctx.now.0 > t.0.saturating_add(oldest) {
        return Err(format!(
            "step time {t} is more than {oldest} ms behind this node's clock {}: too late to commit",
            ctx.now
        ));
    }
    Ok(())
}

fn check_sources(me: &AuthorityId, body: &EntryBody, ctx: &CheckContext<'_>) -> Result<(), String> {
    let Some((campaign_id, _, records, time)) = event_parts(body) else {
        return Err("a data-source authority co-signs only step and composite events".into());
    };
    check_time(ctx, time)?;
    let c = campaign(ctx, campaign_id)?;
    let mut mine = 0usize;
    for r in records {
        let s = ctx
            .state
            .source_state(&r.source)
            .ok_or_else(|| format!("source {} is not registered", r.source.short()))?;
        if &s.manifest.authority != me {
            continue;
        }
        mine += 1;
        s.manifest
            .verify_example(r.index, &r.example_hash, &r.proof)
            .map_err(|e| {
                format!(
                    "example {} is not in source {} ({}): {e}",
                    r.index,
                    r.source.short(),
                    s.manifest.title
                )
            })?;
        if let Some(at) = s.revoked {
            // Whatever the step time claims: nothing more of a revoked
            // source is signed.
            return Err(format!("source {} was revoked at {at}", r.source.short()));
        }
        if !s.manifest.valid_at(time) {
            return Err(format!(
                "source {} is not valid at step time {time}",
                r.source.short()
            ));
        }
        if !s.manifest.purposes.contains(&c.purpose) {
            return Err(format!(
                "source {} does not allow purpose {}",
                r.source.short(),
                c.purpose
            ));
        }
    }
    if mine == 0 {
        return Err("no example of this authority's sources is in the event".into());
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
) -> Result<Option<Admission>, String> {
    let p = ctx
        .state
        .policy(policy)
        .ok_or_else(|| format!("policy {} is not registered", policy.short()))?;
    let Some(m) = ctx.state.source(source) else {
        return Ok(None);
    };
    let sig = (ctx.manifest_signature)(source)
        .ok_or_else(|| format!("the signature of source {} is not in the log", source.short()))?;
    let revocations = ctx.state.revocations();
    let a = AdmissionContext {
        keyring: ctx.keyring,
        policy: p,
        campaign: c,
        revocations: &revocations,
        time,
    };
    Ok(Some(admit(&a, m, &sig)))
}

fn check_governance(body: &EntryBody, ctx: &CheckContext<'_>) -> Result<(), String> {
    let (Some(link), Some(policy)) = (body.chain_link(), body.record_policy()) else {
        return Err("governance co-signs only campaign records".into());
    };
    let campaign_id = &link.campaign;
    let c = campaign(ctx, campaign_id)?;
    if !policy_descends(ctx.state, &c.policy, policy) {
        return Err(format!(
            "policy {} is neither the campaign's policy nor a successor signed by governance",
            policy.short()
        ));
    }
    if let Some((_, _, records, time)) = event_parts(body) {
        check_time(ctx, time)?;
        for r in records {
            match admission_of(ctx, c, policy, &r.source, time)? {
                Some(Admission::Admit(d)) if d == r.decision => {}
                Some(Admission::Admit(_)) => {
                    return Err(format!(
                        "example {} of source {}: the recorded depth or routing differs from the policy's",
                        r.index,
                        r.source.short()
                    ))
                }
                Some(Admission::Refuse { reason, detail }) => {
                    return Err(format!(
                        "example {} of source {} must be refused ({reason}): {detail}",
                        r.index,
                        r.source.short()
                    ))
                }
                None => return Err(format!("source {} is not registered", r.source.short())),
            }
        }
        return Ok(());
    }
    if let EntryBody::Refusal(r) = body {
        if r.reason == RefusalReason::Memorisation {
            let p = ctx
                .state
                .policy(policy)
                .ok_or_else(|| format!("policy {} is not registered", policy.short()))?;
            let m = r
                .measurement
                .as_ref()
                .ok_or("a memorisation refusal must carry the rolled-back step's measurement")?;
            if check_memorisation(p, &m.signals).is_none() {
                return Err("no memorisation signal exceeds the policy's threshold".into());
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
                    return Err(format!(
                        "source {} is refused for {reason}, not {}",
                        e.source.short(),
                        r.reason
                    ))
                }
                Some(Admission::Admit(_)) => {
                    return Err(format!(
                        "source {} is admissible: refusing it for {} is wrong",
                        e.source.short(),
                        r.reason
                    ))
                }
                None => return Err(format!("source {} is not registered", e.source.short())),
            }
        }
    }
    Ok(())
}
