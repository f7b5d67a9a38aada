//! A campaign's record as the ledger holds it: its opening, its chain
//! records in order, and its close.
//!
//! [`CampaignRecord::new`] checks the chain: records numbered `0..n` in
//! order, each naming its predecessor's body digest, the close naming the
//! last one and the count, every record of this campaign. So a record
//! missing one entry is refused: that is where a verifier's completeness
//! comes from.

use crate::{Campaign, CampaignClose, Canonical, Digest, EntryBody};

/// Why entries are not a campaign's whole record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record is missing, out of order or of another campaign.
    #[error("campaign record incomplete or out of order: {0}")]
    Incomplete(String),
    /// An entry that is not this campaign's opening, record or close.
    #[error("not a record of campaign {campaign}: {detail}")]
    Foreign {
        /// The campaign.
        campaign: Digest,
        /// Which entry, and what it is.
        detail: String,
    },
}

/// A campaign's listed entries sorted into its parts, each with the
/// caller's tag (a log index, a file position).
#[derive(Debug, Clone)]
pub struct CampaignEntries<T> {
    /// The opening.
    pub campaign: Option<(T, Campaign)>,
    /// The chain records, by sequence number.
    pub chain: Vec<(T, EntryBody)>,
    /// The close.
    pub close: Option<(T, CampaignClose)>,
}

/// Sorts the entries of campaign `id` into its opening, its chain records
/// (by sequence number) and its close. An entry that is none of these, or
/// two records with one number, is refused.
pub fn collect<T: std::fmt::Display>(
    id: &Digest,
    entries: impl IntoIterator<Item = (T, EntryBody)>,
) -> Result<CampaignEntries<T>, RecordError> {
    let mut campaign = None;
    let mut close = None;
    let mut chain = std::collections::BTreeMap::new();
    for (tag, body) in entries {
        match body {
            EntryBody::Campaign(c) if c.digest() == *id => campaign = Some((tag, c)),
            EntryBody::CampaignClose(c) if c.campaign == *id => close = Some((tag, c)),
            b => {
                let Some(l) = b.chain_link().filter(|l| l.campaign == *id) else {
                    return Err(RecordError::Foreign {
                        campaign: *id,
                        detail: format!("entry {tag} is a {}", b.kind().name()),
                    });
                };
                let seq = l.seq;
                if chain.insert(seq, (tag, b)).is_some() {
                    return Err(RecordError::Incomplete(format!("two records number {seq}")));
                }
            }
        }
    }
    Ok(CampaignEntries {
        campaign,
        chain: chain.into_values().collect(),
        close,
    })
}

/// Checks that `chain` is records `0..n` of campaign `id`, in order, each
/// naming its predecessor's body digest; returns the last one's digest
/// (zero for an empty chain). An open campaign's listing must pass this.
pub fn check_chain(id: &Digest, chain: &[EntryBody]) -> Result<Digest, RecordError> {
    let bad = RecordError::Incomplete;
    let mut prev = Digest::ZERO;
    for (i, b) in chain.iter().enumerate() {
        let l = b
            .chain_link()
            .ok_or_else(|| bad(format!("entry {i} is not a chain record")))?;
        if l.campaign != *id {
            return Err(bad(format!(
                "entry {i} belongs to campaign {}",
                l.campaign.short()
            )));
        }
        if l.seq != i as u64 {
            return Err(bad(format!("record {} where record {i} belongs", l.seq)));
        }
        if l.prev != prev {
            return Err(bad(format!(
                "record {i} does not follow record {}",
                i.saturating_sub(1)
            )));
        }
        prev = b.digest();
    }
    Ok(prev)
}

/// A campaign's entries in chain order, checked complete.
#[derive(Debug, Clone)]
pub struct CampaignRecord {
    /// The campaign.
    pub campaign: Campaign,
    /// Its chain records (steps, composites, refusals, aggregates), `seq`
    /// `0..n` in order.
    pub chain: Vec<EntryBody>,
    /// Its close.
    pub close: CampaignClose,
}

impl CampaignRecord {
    /// Checks that `chain` is the whole chain `close` names.
    pub fn new(campaign: Campaign, chain: Vec<EntryBody>, close: CampaignClose) -> Result<Self, RecordError> {
        let cd = campaign.digest();
        let bad = RecordError::Incomplete;
        if close.campaign != cd {
            return Err(bad("the close names another campaign".into()));
        }
        let prev = check_chain(&cd, &chain)?;
        if close.entries != chain.len() as u64 || close.head != prev {
            return Err(bad(format!(
                "the close names {} records ending in {}, {} were given ending in {}",
                close.entries,
                close.head.short(),
                chain.len(),
                prev.short()
            )));
        }
        Ok(Self {
            campaign,
            chain,
            close,
        })
    }

    /// The training events (steps and composites) with their chain
    /// position.
    pub fn events(&self) -> impl Iterator<Item = (u64, &EntryBody)> + '_ {
        self.chain
            .iter()
            .enumerate()
            .filter(|(_, b)| b.event().is_some())
            .map(|(i, b)| (i as u64, b))
    }
}
