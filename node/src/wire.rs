//! What nodes say to each other, and its one encoding: the canonical codec
//! (bincode, fixed config, 16 MiB limit, trailing bytes refused), so a
//! malformed or oversized message is a typed error, never a panic.
//!
//! Two transports carry these:
//! * gossipsub ([`Gossip`]), signed by the author's node key, so the
//!   receiver knows which validator wrote it even when relayed;
//! * request-response ([`Request`] / [`Response`]), point to point: block
//!   sync and block fetch for consensus, blobs in parts, checkpoints, audit
//!   material.

use consensus::Message;
use provenance::audit::Audit;
use provenance::codec::{decode_raw, encode, nested_version, DecodeError};
use provenance::crypto::{AuthorityShare, AuthoritySignature};
use provenance::{AuthorityId, Bytes, Canonical, Checkpoint, Digest, EntryBody, SignedCheckpoint};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A block's payload: the canonical bytes of its ledger entries, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockPayload {
    /// Each entry's canonical bytes (the Merkle leaf input).
    pub entries: Vec<Bytes>,
}

/// A consensus message between validators (shares and certificates are
/// threshold BLS bytes).
pub type ConsensusMessage = Message<BlockPayload, Bytes, Bytes>;

/// A gossiped message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Gossip {
    /// An entry offered for co-signing, with the signatures gathered so
    /// far. Its submitter re-offers it until it is committed, so a node
    /// that was away still gets the chance to sign.
    Offer {
        /// The entry body.
        body: EntryBody,
        /// Signatures gathered so far.
        signatures: Vec<AuthoritySignature>,
        /// The auditors' audits gathered with them (a training record
        /// under an auditing policy).
        audits: Vec<Audit>,
    },
    /// One authority's signature of its section of an entry.
    Signature {
        /// The entry body digest.
        entry: Digest,
        /// The signature.
        signature: AuthoritySignature,
        /// Its audit, when it audits the entry (`provenance::audit`).
        audit: Option<Audit>,
    },
    /// An authority refuses to sign its section, and says why.
    Refusal {
        /// The entry body digest.
        entry: Digest,
        /// The refusing authority (must be the author node's authority).
        authority: AuthorityId,
        /// Why.
        reason: String,
    },
    /// A validator's share of the checkpoint of a finalised height.
    CheckpointShare {
        /// The checkpoint.
        checkpoint: Checkpoint,
        /// The validator.
        validator: u16,
        /// Its consortium key share signature.
        share: Bytes,
        /// Its Ed25519 note signature over the checkpoint's body.
        note: Bytes,
    },
    /// A certified checkpoint (sent to a peer still collecting shares for a
    /// height this node has already certified).
    Checkpoint(SignedCheckpoint),
    /// A consensus message to every validator.
    Consensus(ConsensusMessage),
    /// One node's share of its authority's signature for an entry (an
    /// authority of several nodes signs with t+1 of them; any node holding
    /// t+1 shares combines them). Appended last: earlier messages encode
    /// as before.
    Share {
        /// The entry body digest.
        entry: Digest,
        /// What the share signs.
        part: SharePart,
        /// The share (must be the author node's own: its authority, its
        /// share index).
        share: AuthorityShare,
    },
}

/// What an authority's share signs for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharePart {
    /// Its section of the entry.
    Section,
    /// Its audit ticket for the record's position (BLS: t+1 shares
    /// combine to the one ticket the authority has there).
    Ticket,
    /// Its replay of the record, with the recomputed quantities' digest.
    Replay(Digest),
}

/// A point-to-point request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// A consensus message whose answers come back in the response (block
    /// sync and block fetch).
    Consensus(ConsensusMessage),
    /// A blob by content digest.
    Blob(Digest),
    /// Certified checkpoints from a height on (at most 256).
    Checkpoints {
        /// First height wanted.
        from: u64,
    },
    /// A campaign's audit material, held by its operator's nodes and
    /// served only to governance nodes (`node::inbox`).
    Audit {
        /// The campaign.
        campaign: Digest,
        /// Which part.
        part: crate::inbox::AuditPart,
    },
    /// Part of a blob (`crate::blobs`): a blob of any size up to the API's
    /// limit crosses in parts under the message limit. Appended last:
    /// earlier requests encode as before.
    BlobPart {
        /// The blob's content digest.
        digest: Digest,
        /// Where the part starts.
        offset: u64,
        /// Most bytes wanted (at most `crate::blobs::PART_BYTES`; 0 asks
        /// only whether the blob is held, and its length).
        len: u32,
    },
}

/// A point-to-point response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The consensus messages the request produced for the requester.
    Consensus(Vec<ConsensusMessage>),
    /// The blob, if held.
    Blob(Option<Bytes>),
    /// Checkpoints, ascending.
    Checkpoints(Vec<SignedCheckpoint>),
    /// The audit material asked for, if held here and the requester may
    /// have it.
    Audit(Option<Bytes>),
    /// The part of the blob asked for, if held here.
    BlobPart(Option<crate::blobs::BlobPart>),
}

/// Encodes a wire message.
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    encode(value)
}

/// Decodes a wire message, refusing trailing bytes.
pub fn from_bytes<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let (v, read) = decode_raw::<T>(what, bytes)?;
    if read != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            kind: what,
            extra: bytes.len() - read,
        });
    }
    Ok(v)
}

/// Runs the checks canonical decoding would run on the object inside an
/// entry body (format version, size limits, finite numbers): bodies that
/// arrive inside wire messages or as JSON pass the same gate as stored ones.
pub fn check_body(body: &EntryBody) -> Result<(), DecodeError> {
    fn one<T: Canonical>(o: &T) -> Result<(), DecodeError> {
        nested_version(o)?;
        o.check()
    }
    match body {
        EntryBody::Manifest(o) => one(o),
        EntryBody::Policy(o) => one(o),
        EntryBody::Campaign(o) => one(o),
        EntryBody::CampaignClose(o) => one(o),
        EntryBody::Step(o) => one(o),
        EntryBody::Composite(o) => one(o),
        EntryBody::Refusal(o) => one(o),
        EntryBody::RefusalAggregate(o) => one(o),
        EntryBody::Revocation(o) => one(o),
        EntryBody::Checkpoint(o) => one(o),
        EntryBody::AuditFailure(o) => one(o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbitrary_bytes_never_panic_and_trailing_bytes_are_refused() {
        let msg = Gossip::Refusal {
            entry: Digest::ZERO,
            authority: AuthorityId::new("globe-press").expect("valid id"),
            reason: "no".into(),
        };
        let mut b = to_bytes(&msg);
        assert!(from_bytes::<Gossip>("gossip", &b).is_ok());
        b.push(0);
        assert!(matches!(
            from_bytes::<Gossip>("gossip", &b),
            Err(DecodeError::TrailingBytes { .. })
        ));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = from_bytes::<Gossip>("gossip", &bytes);
            let _ = from_bytes::<Request>("request", &bytes);
            let _ = from_bytes::<Response>("response", &bytes);
        }
    }
}
