//! `POST /v1/trace` and the listings a verifier walks
//! (`GET /v1/campaigns/{id}/entries`, `GET /v1/sources/{id}/entries`).
//!
//! Any node answers a trace, not only the operator's: it reads the closed
//! campaign's record from its own store, fetches the blobs it lacks (the
//! recipe, base weights, deltas and sketches the record names) from its
//! peers, rebuilds the trace inputs with `tuner::record::PreparedTrace`
//! (every delta checked against the recorded model-state digests; cached
//! per campaign), scores the query, and answers with its claim *and* every
//! ledger fact the claim cites as a leaf with its inclusion proof under its
//! latest certified checkpoint ([`provenance::api::TraceAnswer`]). The
//! scores are the node's claim; `govtune verify trace` checks the facts and,
//! with `--recompute`, the scores.
//!
//! One trace runs at a time per node (CPU-bound; the consensus task keeps
//! its own threads).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::Json;
use provenance::api::{
    BaseLineage, CitedEntry, IndexCitation, IndexPage, ListingAnswer, ListingQuery, TraceAnswer,
    TraceRequest, TracedBlock, TracedEvent, TracedExample, TracedSource, MAX_LISTING_BYTES,
    MAX_LISTING_ENTRIES,
};
use provenance::index::IndexKey;
use provenance::{Canonical, Digest, EntryBody, LedgerEntry, SignedCheckpoint};
use storage::{IndexPrefix, Store};
use tokio::sync::oneshot;
use tuner::record::{CampaignRecord, PreparedTrace};
use tuner::score::Method;

use crate::api::{ApiError, ApiState, JsonBody};
use crate::runtime::ApiCommand;

/// Longest prompt or output a trace accepts (bytes).
pub const MAX_TRACE_TEXT: usize = 4096;

/// Traces waiting for the one-at-a-time gate at most; more are refused
/// with 429.
pub const MAX_TRACE_QUEUE: usize = 8;

/// Prepared campaigns and the one-at-a-time gate.
#[derive(Default)]
pub struct TraceCache {
    prepared: Mutex<HashMap<Digest, Arc<PreparedTrace>>>,
    gate: tokio::sync::Mutex<()>,
    queued: std::sync::atomic::AtomicUsize,
}

/// A place in the trace queue, given back when dropped.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TraceCache {
    /// A place in the queue, or 429 when [`MAX_TRACE_QUEUE`] traces wait.
    fn enqueue(&self) -> Result<Queued<'_>, ApiError> {
        let q = &self.queued;
        let before = q.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let place = Queued(q);
        if before >= MAX_TRACE_QUEUE {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!("{MAX_TRACE_QUEUE} traces are already waiting here; retry later"),
            ));
        }
        Ok(place)
    }
}

/// A trace method name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown method {name:?}; one of {known}")]
pub struct UnknownMethod {
    /// The name asked for.
    pub name: String,
    /// The names known, comma-separated.
    pub known: String,
}

/// A method by name (the default TracIn when none is given).
pub fn parse_method(name: Option<&str>) -> Result<Method, UnknownMethod> {
    let all = Method::selectable();
    let name = name.unwrap_or(all[0].name());
    Method::by_name(name).ok_or_else(|| UnknownMethod {
        name: name.to_string(),
        known: all.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
    })
}

fn cite(st: &Store, index: u64, size: u64) -> Result<CitedEntry, ApiError> {
    let leaf = st
        .entry_bytes(index)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("leaf {index} missing")))?;
    let e: LedgerEntry = provenance::decode(&leaf).map_err(ApiError::internal)?;
    let proof = st
        .inclusion_proof(index, size)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("no inclusion proof of {index} in {size}")))?;
    Ok(CitedEntry {
        index,
        digest: e.body.digest(),
        leaf: hex::encode(leaf),
        proof,
    })
}

fn cite_digest(st: &Store, d: &Digest, size: u64) -> Result<CitedEntry, ApiError> {
    let index = st
        .index_of(d)
        .map_err(ApiError::internal)?
        .filter(|i| *i < size)
        .ok_or_else(|| ApiError::conflict(format!("entry {d} is not under the latest checkpoint")))?;
    cite(st, index, size)
}

fn latest(st: &Store) -> Result<SignedCheckpoint, ApiError> {
    st.served_checkpoint()
        .cloned()
        .ok_or_else(|| match st.latest_checkpoint() {
            Some(_) => ApiError::conflict("no checkpoint has the cosignatures genesis requires yet"),
            None => ApiError::conflict("no certified checkpoint yet"),
        })
}

/// One page of the entries the prefix lists under the checkpoint the query
/// names (the latest by default), with proofs, and how many listed entries
/// that checkpoint does not cover.
fn cited_listing(
    s: &ApiState,
    prefix: &IndexPrefix,
    q: ListingQuery,
) -> Result<Json<ListingAnswer>, ApiError> {
    let st = s.store();
    let cp = match q.height {
        None => latest(&st)?,
        Some(h) => st
            .checkpoint(h)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no certified checkpoint at height {h} here")))?,
    };
    let size = cp.checkpoint.size;
    let indexes = st.query(prefix).map_err(ApiError::internal)?;
    let uncertified = indexes.iter().filter(|i| **i >= size).count() as u64;
    // The rank, in the key's list, of the first entry after the cursor.
    let first = indexes.partition_point(|i| q.after.is_some_and(|a| *i <= a)) as u64;
    let mut rest = indexes
        .into_iter()
        .filter(|i| *i < size && q.after.is_none_or(|a| *i > a))
        .peekable();
    let (mut entries, mut bytes) = (Vec::new(), 0usize);
    while let Some(&i) = rest.peek() {
        if entries.len() >= MAX_LISTING_ENTRIES || (bytes >= MAX_LISTING_BYTES && !entries.is_empty()) {
            break;
        }
        let c = cite(&st, i, size)?;
        bytes += c.leaf.len() / 2;
        entries.push(c);
        rest.next();
    }
    let next = rest.peek().and(entries.last().map(|c: &CitedEntry| c.index));
    let index = match prefix.authenticated() {
        Some(key) => Some(index_citation(&st, &key, size, first, entries.len() as u64)?),
        None => None,
    };
    Ok(Json(ListingAnswer {
        checkpoint: s.checkpoint_answer(&st, &cp),
        entries,
        uncertified,
        next,
        index,
    }))
}

/// The index's proof of `key` at `size` and the pages of its positions
/// that hold a listing page's entries: those of ranks `first..first + n`
/// in the key's list (when `n` is 0, the last page, which shows where the
/// list ends).
fn index_citation(
    st: &Store,
    key: &IndexKey,
    size: u64,
    first: u64,
    n: u64,
) -> Result<IndexCitation, ApiError> {
    use provenance::index::{page_count, PAGE};
    let proof = st.index_proof(key, size).map_err(ApiError::internal)?;
    let value = match &proof.leaf {
        Some((path, v)) if *path == key.path() => *v,
        _ => {
            return Ok(IndexCitation {
                proof,
                pages: Vec::new(),
            })
        }
    };
    let pages_in = page_count(value.count);
    let (from, to) = match n {
        0 => (pages_in - 1, pages_in - 1),
        n => (first / PAGE as u64, (first + n - 1) / PAGE as u64),
    };
    let mut pages = Vec::new();
    for page in from..=to.min(pages_in - 1) {
        let (positions, proof) = st
            .index_page(key, &value, page)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("index page {page} of {pages_in} is missing")))?;
        pages.push(IndexPage {
            page,
            positions,
            proof,
        });
    }
    Ok(IndexCitation { proof, pages })
}

/// `GET /v1/campaigns/{id}/entries`: the campaign's opening, chain records
/// and close, with proofs under the latest checkpoint.
pub async fn campaign_entries(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ListingQuery>,
) -> Result<Json<ListingAnswer>, ApiError> {
    let id = crate::api::parse_digest(&id)?;
    // An id never registered is answered too: no entries, and the index's
    // proof that none names it.
    cited_listing(&s, &IndexPrefix::campaign(&id), q)
}

/// `GET /v1/sources/{id}/entries`: the source's manifest and every entry
/// that names it (events, refusals, closes, its revocation), with proofs.
pub async fn source_entries(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ListingQuery>,
) -> Result<Json<ListingAnswer>, ApiError> {
    let id = crate::api::parse_digest(&id)?;
    cited_listing(&s, &IndexPrefix::source(&id), q)
}

/// The closed campaign's record with each chain entry's log index.
fn campaign_record(st: &Store, id: &Digest) -> Result<(CampaignRecord, Vec<u64>, u64, u64), ApiError> {
    let cs = st
        .state()
        .campaign_state(id)
        .ok_or_else(|| ApiError::not_found(format!("campaign {id} is not registered")))?;
    if cs.closed.is_none() {
        return Err(ApiError::conflict(format!(
            "campaign {id} is not closed: only a closed campaign's record is complete"
        )));
    }
    let mut listed = Vec::new();
    for i in st.query(&IndexPrefix::campaign(id)).map_err(ApiError::internal)? {
        let e = st
            .entry(i)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("entry {i} missing")))?;
        listed.push((i, e.body));
    }
    let parts = provenance::record::collect(id, listed).map_err(ApiError::internal)?;
    let (ci, campaign) = parts
        .campaign
        .ok_or_else(|| ApiError::internal("campaign entry missing"))?;
    let (xi, close) = parts
        .close
        .ok_or_else(|| ApiError::internal("close entry missing"))?;
    let (indexes, bodies): (Vec<u64>, Vec<EntryBody>) = parts.chain.into_iter().unzip();
    let record = CampaignRecord::new(campaign, bodies, close).map_err(ApiError::internal)?;
    Ok((record, indexes, ci, xi))
}

async fn fetch_blob(s: &ApiState, d: Digest) -> Result<Vec<u8>, String> {
    if let Some(b) = s.store().blob(&d).map_err(|e| e.to_string())? {
        return Ok(b);
    }
    let (reply, rx) = oneshot::channel();
    s.core()
        .send(ApiCommand::FetchBlob { digest: d, reply })
        .await
        .map_err(|e| e.to_string())?;
    rx.await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no node has blob {d}"))
}

async fn prepared(s: &ApiState, record: CampaignRecord) -> Result<Arc<PreparedTrace>, ApiError> {
    let id = record.campaign.digest();
    if let Some(p) = s
        .traces()
        .prepared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
    {
        return Ok(p.clone());
    }
    let s2 = s.clone();
    let handle = tokio::runtime::Handle::current();
    let p = tokio::task::spawn_blocking(move || {
        let mut fetch = |d: &Digest| -> tuner::Result<Vec<u8>> {
            handle
                .block_on(fetch_blob(&s2, *d))
                .map_err(tuner::TunerError::Sink)
        };
        PreparedTrace::build(&record, &mut fetch)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::conflict(format!("the campaign cannot be traced: {e}")))?;
    let p = Arc::new(p);
    s.traces()
        .prepared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, p.clone());
    Ok(p)
}

/// `POST /v1/trace`.
pub async fn post_trace(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<TraceRequest>,
) -> Result<Json<TraceAnswer>, ApiError> {
    let t0 = Instant::now();
    if req.output.is_empty() {
        return Err(ApiError::bad("the output to trace is empty"));
    }
    if req.prompt.len() > MAX_TRACE_TEXT || req.output.len() > MAX_TRACE_TEXT {
        return Err(ApiError::bad(format!(
            "prompt and output are limited to {MAX_TRACE_TEXT} bytes each"
        )));
    }
    let method = parse_method(req.method.as_deref()).map_err(|e| ApiError::bad(e.to_string()))?;
    let top_examples = req.top_examples.unwrap_or(3).min(64);
    let top_events = req.top_events.unwrap_or(5).min(64);
    let (record, chain_index, campaign_index, close_index) = campaign_record(&s.store(), &req.campaign)?;
    let _place = s.traces().enqueue()?;
    let _gate = s.traces().gate.lock().await;
    let prep = prepared(&s, record.clone()).await?;
    let (prompt, output) = (req.prompt.clone(), req.output.clone());
    let p2 = prep.clone();
    let report = tokio::task::spawn_blocking(move || p2.trace(prompt.as_bytes(), output.as_bytes(), method))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad(format!("cannot trace this text: {e}")))?;
    // Cite everything under one checkpoint.
    let st = s.store();
    let cp = latest(&st)?;
    let size = cp.checkpoint.size;
    if close_index >= size {
        return Err(ApiError::conflict(
            "the campaign's close is not certified yet; retry shortly",
        ));
    }
    // The view a verifier recomputes with `--recompute`.
    let view = report.ranked(top_examples, top_events);
    let mut sources = Vec::new();
    for r in &view.sources {
        let sc = &r.score;
        let manifest = cite_digest(&st, &sc.source, size)?;
        let (title, authority) = match st.state().source_state(&sc.source) {
            Some(x) => (x.manifest.title.clone(), x.manifest.authority.to_string()),
            None => (String::new(), String::new()),
        };
        sources.push(TracedSource {
            source: sc.source,
            title,
            rank: r.rank,
            score: sc.score,
            salient: sc.salient,
            examples: sc.examples,
            authority,
            manifest,
            top_examples: r
                .top
                .iter()
                .map(|e| TracedExample {
                    index: e.index,
                    step: e.step,
                    event_seq: e.event,
                    score: e.score,
                })
                .collect(),
        });
    }
    let mut events = Vec::new();
    let mut policies: BTreeSet<Digest> = BTreeSet::from([record.campaign.policy]);
    for k in &view.events {
        let seq = k.key;
        let body = record
            .chain
            .get(seq as usize)
            .ok_or_else(|| ApiError::internal(format!("no record {seq}")))?;
        if let Some(e) = body.event() {
            policies.insert(*e.policy);
        }
        let index = chain_index[seq as usize];
        events.push(TracedEvent {
            seq,
            score: k.score,
            examples: k.examples,
            entry: cite(&st, index, size)?,
        });
    }
    let policies = policies
        .iter()
        .map(|d| cite_digest(&st, d, size))
        .collect::<Result<Vec<_>, _>>()?;
    let base = match record.campaign.base_model.campaign {
        None => None,
        Some(b) => Some(base_lineage(&st, &b, size)?),
    };
    let answer = TraceAnswer {
        campaign: req.campaign,
        method: method.name().into(),
        prompt: req.prompt,
        output: req.output,
        report_digest: report.digest(),
        checkpoint: s.checkpoint_answer(&st, &cp),
        campaign_entry: cite(&st, campaign_index, size)?,
        close_entry: cite(&st, close_index, size)?,
        sources,
        events,
        policies,
        blocks: view
            .blocks
            .iter()
            .map(|b| TracedBlock {
                block: b.block,
                score: b.score,
                share: b.share,
            })
            .collect(),
        base,
        examples_scored: view.examples_scored,
        seconds: t0.elapsed().as_secs_f64(),
    };
    drop(st);
    s.metrics()
        .traces
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Json(answer))
}

fn base_lineage(st: &Store, base: &Digest, size: u64) -> Result<BaseLineage, ApiError> {
    let cs = st
        .state()
        .campaign_state(base)
        .ok_or_else(|| ApiError::internal(format!("base campaign {base} unknown")))?;
    let close_digest = cs
        .closed
        .ok_or_else(|| ApiError::conflict(format!("base campaign {base} is not closed")))?;
    let close = cite_digest(st, &close_digest, size)?;
    let sources = match close.entry().map_err(ApiError::internal)?.body {
        EntryBody::CampaignClose(c) => c
            .per_source
            .iter()
            .map(|p| cite_digest(st, &p.source, size))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(ApiError::internal("base close is not a close")),
    };
    Ok(BaseLineage {
        campaign: cite_digest(st, base, size)?,
        close,
        policy: cite_digest(st, &cs.campaign.policy, size)?,
        sources,
    })
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn the_trace_queue_refuses_beyond_its_bound_and_frees_places() {
        let cache = TraceCache::default();
        let places: Vec<_> = (0..MAX_TRACE_QUEUE)
            .map(|_| cache.enqueue().map_err(|e| format!("{e:?}")).expect("a place"))
            .collect();
        let full = cache.enqueue().err().expect("full");
        assert_eq!(full.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        drop(places);
        assert!(cache.enqueue().is_ok(), "places freed");
    }
}
