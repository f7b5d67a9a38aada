//! The auditor's predicate: every co-signer that audits a campaign's
//! training records left its ticket on each, and a replay on exactly those
//! its ticket selects (`provenance::audit`). The tally ([`AuditTally`]) is
//! pure; [`Verifier::audits`] feeds it a campaign's proved entries.

use provenance::index::IndexKey;
use std::collections::BTreeMap;

use provenance::audit::{audit_faults, AuditFault, AuditedRecord};
use provenance::{AuthorityId, Digest, KeyRing, LedgerEntry, LedgerView};
use serde::Serialize;

use super::{Verdict, Verifier};
use crate::light::VerifyError;

/// One auditor's audits over a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditorTally {
    /// Records it audits (it co-signs them).
    pub records: u64,
    /// Valid tickets it left.
    pub tickets: u64,
    /// Records its tickets select.
    pub selected: u64,
    /// Valid replays it left (on selected records).
    pub replayed: u64,
}

/// Audits over a campaign's training records, by auditor, and every fault.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditTally {
    /// Per auditor.
    pub auditors: BTreeMap<AuthorityId, AuditorTally>,
    /// Training records seen under a policy that audits.
    pub audited_records: u64,
    /// (record's chain position, fault).
    pub faults: Vec<(u64, String)>,
}

impl AuditTally {
    /// Adds one entry (others than training records count for nothing):
    /// returns its faults, also kept in [`Self::faults`].
    pub fn add(
        &mut self,
        keyring: &KeyRing,
        view: &dyn LedgerView,
        entry: &LedgerEntry,
    ) -> Result<Vec<AuditFault>, VerifyError> {
        let Some(ev) = entry.body.event() else {
            return Ok(Vec::new());
        };
        let rate = view
            .policy(ev.policy)
            .ok_or_else(|| {
                VerifyError::Malformed(format!("the record's policy {} is not verified", ev.policy))
            })?
            .audit
            .rate_millionths;
        if rate == 0 && entry.audits.is_empty() {
            return Ok(Vec::new());
        }
        let plan = entry
            .body
            .signing_plan(view)
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let auditors = provenance::audit::auditors(&plan);
        let body = entry.body.digest();
        let record = AuditedRecord {
            campaign: &ev.link.campaign,
            seq: ev.link.seq,
            body: &body,
            rate_millionths: rate,
            auditors: &auditors,
        };
        self.audited_records += 1;
        for a in &auditors {
            self.auditors.entry(a.clone()).or_default().records += 1;
        }
        let faults = if rate == 0 {
            vec![AuditFault::Unexpected {
                authority: entry.audits[0].ticket.authority.clone(),
            }]
        } else {
            audit_faults(keyring, &record, &entry.audits)
        };
        for a in &entry.audits {
            let who = &a.ticket.authority;
            if !auditors.contains(who) || a.ticket.verify(keyring, record.campaign, record.seq).is_err() {
                continue;
            }
            let t = self.auditors.entry(who.clone()).or_default();
            t.tickets += 1;
            if a.ticket.selects(rate) {
                t.selected += 1;
                if a.replay.is_some() && provenance::audit::check_audit(keyring, &record, a).is_ok() {
                    t.replayed += 1;
                }
            }
        }
        for f in &faults {
            self.faults.push((ev.link.seq, f.to_string()));
        }
        Ok(faults)
    }

    /// Whether every auditor audited exactly what its tickets selected.
    pub fn holds(&self) -> bool {
        self.faults.is_empty()
    }
}

impl Verifier {
    /// Auditor: every co-signer of campaign `id`'s training records left a
    /// valid ticket on each, and a valid replay on exactly the records its
    /// ticket selects (the policy's `audit_rate`). A record whose audits
    /// fail is reported (not refused as an unverifiable entry): its proof
    /// and its other signatures are still checked.
    ///
    /// With `recompute`, each replay's digest is recomputed from the
    /// record's public quantities (its measurement and sketch blob) it
    /// claims to confirm.
    pub fn audits(&mut self, id: &Digest, recompute: bool) -> Result<Verdict, VerifyError> {
        let (cp, entries) = self.listing(
            &format!("/v1/campaigns/{}/entries", id.to_hex()),
            IndexKey::Campaign(*id),
        )?;
        let mut v = Verdict::new("audits", &cp);
        let mut tally = AuditTally::default();
        let mut recomputed = 0u64;
        for (i, e) in &entries {
            for d in e.body.references() {
                self.ensure(&cp, &d)?;
            }
            let faults = tally.add(self.light.keyring(), &self.view, e)?;
            if recompute && faults.is_empty() {
                let keyring = self.light.keyring();
                let view = &self.view;
                let role = |a: &AuthorityId| keyring.authority(a).ok().map(|k| k.role);
                let owner = |s: &Digest| view.source(s).map(|m| m.authority.clone());
                for (who, recorded, found) in crate::recompute::replay_digests(&self.node, e, &role, &owner)?
                {
                    recomputed += 1;
                    if recorded != found {
                        v.violation(format!(
                            "entry {i}: {who}'s replay digest {} is not that of the quantities the record states ({})",
                            recorded.short(),
                            found.short()
                        ));
                    }
                }
            }
            if faults.is_empty() {
                self.check_signatures(&cp, *i, e)?;
            } else {
                // Its other signatures, without the audits that failed.
                let mut bare = e.clone();
                bare.audits.clear();
                let plan = bare
                    .body
                    .signing_plan(&self.view)
                    .map_err(|err| VerifyError::Malformed(err.to_string()))?;
                if let provenance::Attestation::Authorities(cosig) = &bare.attestation {
                    provenance::crypto::verify_cosignature(
                        self.light.keyring(),
                        plan.scheme,
                        &plan.requests,
                        cosig,
                    )
                    .map_err(|err| VerifyError::BadSignature(format!("entry {i}: {err}")))?;
                }
                self.learn(*i, e);
                for f in faults {
                    v.violation(format!("entry {i}: {f}"));
                }
            }
        }
        v.notes.push(format!(
            "{} training records under a policy that audits",
            tally.audited_records
        ));
        if recompute {
            v.notes.push(format!(
                "{recomputed} replay digests recomputed from the records' measurements and sketch blobs"
            ));
        }
        for (who, t) in &tally.auditors {
            v.notes.push(format!(
                "{who}: audits {} records, {} tickets, {} selected, {} replayed",
                t.records, t.tickets, t.selected, t.replayed
            ));
        }
        Ok(self.finish(v))
    }
}
