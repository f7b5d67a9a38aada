//! A source's or a campaign's ledger state (`GET /v1/sources/{id}`,
//! `GET /v1/campaigns/{id}`).

use serde::{Deserialize, Serialize};

use crate::{Bytes, Campaign, DataSourceManifest, Digest, Timestamp};

/// `GET /v1/sources/{id}`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAnswer {
    /// Source id (the manifest's digest).
    pub id: Digest,
    /// The manifest.
    pub manifest: DataSourceManifest,
    /// Stamp of the block that registered it.
    pub registered: Timestamp,
    /// When its revocation took effect (null if not revoked).
    pub revoked: Option<Timestamp>,
    /// The manifest entry's log index (null if the node has not indexed it).
    pub index: Option<u64>,
    /// The manifest entry's canonical bytes, hex (null with `index`).
    pub leaf: Option<Bytes>,
}

/// `GET /v1/campaigns/{id}`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignAnswer {
    /// Campaign id (its digest).
    pub id: Digest,
    /// The campaign.
    pub campaign: Campaign,
    /// Digest of its last record's body (zero before the first).
    pub head: Digest,
    /// Number of records in its chain.
    pub entries: u64,
    /// Its close's digest, once closed (else null).
    pub closed: Option<Digest>,
    /// The campaign entry's log index (null if the node has not indexed it).
    pub index: Option<u64>,
    /// The consortium's checkpoint of the block that committed the
    /// campaign, whose signature seeds its data order
    /// ([`crate::order::OrderSeed::from_checkpoint`]); null until certified
    /// here.
    #[serde(default)]
    pub order_checkpoint: Option<super::CheckpointAnswer>,
}
