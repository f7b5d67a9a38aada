//! The `/v1` answer types write exactly the JSON the API documents (the
//! shapes the node built by hand before they were typed) and read it back.

mod common;

use common::*;
use provenance::api::*;
use provenance::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// `typed` serialises to `wire` and `wire` deserialises to `typed`.
fn same<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(typed: &T, wire: Value) {
    assert_eq!(serde_json::to_value(typed).expect("serialises"), wire);
    assert_eq!(&serde_json::from_value::<T>(wire).expect("deserialises"), typed);
}

fn signed_checkpoint() -> SignedCheckpoint {
    SignedCheckpoint {
        checkpoint: Checkpoint {
            version: <Checkpoint as Canonical>::VERSION,
            origin: "govtune-testnet".into(),
            size: 17,
            root: Digest([7; 32]),
            height: 9,
            time: Timestamp(1_764_000_000_000),
            index: Digest([9; 32]),
        },
        signature: Bytes(vec![0xab; 96]),
        validators: vec![provenance::ValidatorSignature {
            validator: 2,
            signature: Bytes(vec![0xcd; 64]),
        }],
    }
}

fn cosignatures() -> Vec<provenance::Cosignature> {
    vec![provenance::Cosignature {
        witness: "witness.example/w1".into(),
        time: 1_764_000_001,
        signature: Bytes(vec![0xef; 64]),
    }]
}

fn checkpoint_wire() -> Value {
    let c = signed_checkpoint();
    json!({
        "origin": c.checkpoint.origin,
        "size": c.checkpoint.size,
        "root": c.checkpoint.root,
        "height": c.checkpoint.height,
        "time": 1_764_000_000_000u64,
        "index": c.checkpoint.index,
        "signature": hex::encode(c.signature.as_slice()),
        "validators": [{"validator": 2, "signature": hex::encode([0xcd; 64])}],
        "cosignatures": [{"witness": "witness.example/w1", "time": 1_764_000_001u64, "signature": hex::encode([0xef; 64])}],
        "c2sp": "note\n",
    })
}

#[test]
fn a_checkpoint_answer_is_the_checkpoint_with_hex_signature_and_note() {
    let c = signed_checkpoint();
    let a = CheckpointAnswer::new(&c, cosignatures(), "note\n".into());
    same(&a, checkpoint_wire());
    assert_eq!(a.to_signed(), c);
    assert_eq!(
        CheckpointQuery {
            format: Some("c2sp".into()),
            height: Some(3)
        }
        .to_query(),
        "height=3&format=c2sp"
    );
    assert_eq!(CheckpointQuery::default().to_query(), "");
}

#[test]
fn write_answers_carry_the_digest_and_the_status() {
    let d = Digest([1; 32]);
    same(
        &SubmitAnswer {
            digest: d,
            state: Some(EntryState::Committed(LogIndex { index: 4 })),
        },
        json!({ "digest": d, "status": "committed", "index": 4 }),
    );
    let pending = EntryStatus::Pending {
        signed: vec![id("tuning-lab")],
        missing: vec![id("standards-board")],
        complete: false,
    };
    same(
        &SubmitAnswer {
            digest: d,
            state: Some(EntryState::Uncommitted(pending)),
        },
        json!({ "digest": d, "status": "pending", "signed": ["tuning-lab"],
                "missing": ["standards-board"], "complete": false }),
    );
    same(
        &SubmitAnswer {
            digest: d,
            state: None,
        },
        json!({ "digest": d }),
    );
    same(
        &BlobAnswer { digest: d, bytes: 12 },
        json!({ "digest": d, "bytes": 12 }),
    );
    same(
        &ErrorBody {
            error: "no such endpoint".into(),
        },
        json!({ "error": "no such endpoint" }),
    );
}

#[test]
fn an_entry_answer_is_committed_pending_or_refused() {
    let d = Digest([2; 32]);
    let leaf = vec![1u8, 2, 3];
    let proof = vec![Digest([3; 32]), Digest([4; 32])];
    let committed = |checkpoint: Option<CheckpointAnswer>| EntryAnswer {
        digest: d,
        state: EntryState::Committed(CommittedEntry {
            index: 5,
            size: 17,
            leaf: Bytes(leaf.clone()),
            proof: proof.clone(),
            checkpoint,
        }),
    };
    let wire = |checkpoint: Value| {
        json!({ "digest": d, "status": "committed", "index": 5, "size": 17,
                "leaf": hex::encode(&leaf), "proof": proof, "checkpoint": checkpoint })
    };
    let cp = CheckpointAnswer::new(&signed_checkpoint(), cosignatures(), "note\n".into());
    same(&committed(Some(cp)), wire(checkpoint_wire()));
    same(&committed(None), wire(Value::Null));
    assert_eq!(committed(None).state.committed().map(|c| c.index), Some(5));
    same(
        &EntryAnswer {
            digest: d,
            state: EntryState::Uncommitted(EntryStatus::Pending {
                signed: vec![],
                missing: vec![id("standards-board")],
                complete: true,
            }),
        },
        json!({ "digest": d, "status": "pending", "signed": [],
                "missing": ["standards-board"], "complete": true }),
    );
    let refused = EntryAnswer {
        digest: d,
        state: EntryState::Uncommitted(EntryStatus::Refused {
            by: id("bard-trust"),
            reason: "example 3 is not in source".into(),
        }),
    };
    same(
        &refused,
        json!({ "digest": d, "status": "refused", "by": "bard-trust",
                "reason": "example 3 is not in source" }),
    );
    assert!(refused.state.committed().is_none());
    // A status the API does not have is refused, not read as another.
    let unknown = json!({ "digest": d, "status": "lost" });
    assert!(serde_json::from_value::<EntryAnswer>(unknown).is_err());
}

#[test]
fn health_reads_and_writes_a_null_checkpoint_height() {
    let h = HealthAnswer {
        genesis: Digest([5; 32]),
        authority: id("tuning-lab"),
        role: Role::Operator,
        height: 3,
        log_size: 10,
        root: Digest([6; 32]),
        checkpoint_height: None,
        peers: 3,
        view: 4,
        mempool: 0,
        pending: 1,
    };
    same(
        &h,
        json!({ "genesis": h.genesis, "authority": "tuning-lab", "role": "operator",
                "height": 3, "log_size": 10, "root": h.root, "checkpoint_height": null,
                "peers": 3, "view": 4, "mempool": 0, "pending": 1 }),
    );
}

#[test]
fn log_answers_and_queries() {
    let d = Digest([8; 32]);
    same(
        &LeavesAnswer {
            log_size: 3,
            leaves: vec![LogLeaf {
                index: 2,
                digest: d,
                leaf: Bytes(vec![0xde, 0xad]),
            }],
        },
        json!({ "log_size": 3, "leaves": [{ "index": 2, "digest": d, "leaf": "dead" }] }),
    );
    same(
        &InclusionAnswer {
            index: 2,
            size: 3,
            leaf: Bytes(vec![0xbe, 0xef]),
            proof: vec![d],
        },
        json!({ "index": 2, "size": 3, "leaf": "beef", "proof": [d] }),
    );
    same(
        &ConsistencyAnswer {
            first: 1,
            second: 3,
            proof: vec![],
        },
        json!({ "first": 1, "second": 3, "proof": [] }),
    );
    assert_eq!(LeavesQuery { start: 0, end: 9 }.to_query(), "start=0&end=9");
    assert_eq!(InclusionQuery { index: 1, size: 2 }.to_query(), "index=1&size=2");
    assert_eq!(
        ConsistencyQuery { first: 1, second: 2 }.to_query(),
        "first=1&second=2"
    );
}

#[test]
fn source_and_campaign_answers_send_their_nones_as_null() {
    let m = manifest("bard-trust");
    let id_ = m.digest();
    let s = SourceAnswer {
        id: id_,
        manifest: m.clone(),
        registered: Timestamp(T0),
        revoked: None,
        index: Some(1),
        leaf: Some(Bytes(vec![1])),
    };
    same(
        &s,
        json!({ "id": id_, "manifest": m, "registered": T0, "revoked": null,
                "index": 1, "leaf": "01" }),
    );
    let s = SourceAnswer {
        revoked: Some(Timestamp(T0 + 5)),
        index: None,
        leaf: None,
        ..s
    };
    same(
        &s,
        json!({ "id": id_, "manifest": m, "registered": T0, "revoked": T0 + 5,
                "index": null, "leaf": null }),
    );
    let c = campaign(&policy());
    let cid = c.digest();
    same(
        &CampaignAnswer {
            id: cid,
            campaign: c.clone(),
            head: Digest::ZERO,
            entries: 0,
            closed: None,
            index: None,
            order_checkpoint: None,
        },
        json!({ "id": cid, "campaign": c, "head": Digest::ZERO, "entries": 0,
                "closed": null, "index": null, "order_checkpoint": null }),
    );
}

#[test]
fn a_listing_embeds_the_checkpoint_answer() {
    let cited = CitedEntry {
        index: 0,
        digest: Digest([9; 32]),
        leaf: "00".into(),
        proof: vec![],
    };
    same(
        &ListingAnswer {
            checkpoint: CheckpointAnswer::new(&signed_checkpoint(), cosignatures(), "note\n".into()),
            entries: vec![cited.clone()],
            uncertified: 2,
            next: Some(0),
            index: Some(IndexCitation {
                proof: provenance::index::IndexProof {
                    leaf: Some((
                        Digest([1; 32]),
                        provenance::index::IndexValue {
                            count: 1,
                            pages: Digest([2; 32]),
                        },
                    )),
                    siblings: vec![Digest([3; 32])],
                },
                pages: vec![IndexPage {
                    page: 0,
                    positions: vec![0],
                    proof: vec![],
                }],
            }),
        },
        json!({
            "checkpoint": checkpoint_wire(), "entries": [cited], "uncertified": 2, "next": 0,
            "index": {
                "proof": { "leaf": [Digest([1; 32]), { "count": 1, "pages": Digest([2; 32]) }], "siblings": [Digest([3; 32])] },
                "pages": [{ "page": 0, "positions": [0], "proof": [] }],
            },
        }),
    );
    // An answer without a cursor (a node before paging) is the last page.
    let old: ListingAnswer = serde_json::from_value(
        json!({ "checkpoint": checkpoint_wire(), "entries": [cited], "uncertified": 2 }),
    )
    .expect("decodes");
    assert_eq!(old.next, None);
    assert_eq!(
        ListingQuery {
            after: Some(7),
            height: Some(3)
        }
        .to_query(),
        "after=7&height=3"
    );
    assert_eq!(ListingQuery::default().to_query(), "");
}
