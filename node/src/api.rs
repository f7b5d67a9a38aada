//! The HTTP JSON API, versioned under `/v1` (reference: docs/api.md).
//!
//! Writes are accepted only by the node of the authority whose role the
//! endpoint serves, with that node's admin token (`Authorization: Bearer`);
//! the node checks the object, signs its section with its authority key,
//! stores it durably and offers it to the consortium, then answers with its
//! digest. Reads are public. Every refusal is a 4xx with a JSON reason and
//! changes nothing; an internal fault is a bare 500 (details in the log).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::body::Bytes as BodyBytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use provenance::api::{
    BlobAnswer, CampaignAnswer, CheckpointAnswer, CheckpointQuery, CommittedEntry, ConsistencyAnswer,
    ConsistencyQuery, EntryAnswer, EntryState, ErrorBody, HealthAnswer, InclusionAnswer, InclusionQuery,
    LeavesAnswer, LeavesQuery, LogIndex, LogLeaf, SourceAnswer, SubmitAnswer,
};
use provenance::{
    AuthorityId, Bytes, Campaign, Canonical, DataSourceManifest, Digest, EntryBody, Genesis, KeyRing,
    PolicyArtifact, Revocation, Role, SignedCheckpoint,
};
use serde::de::DeserializeOwned;
use storage::Store;
use tokio::sync::{mpsc, oneshot};

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::runtime::{ApiCommand, EntryStatus, OfferError};

/// Most leaves one `/v1/log/leaves` answer carries.
pub const MAX_LEAVES: u64 = 256;
/// About the most leaf bytes one `/v1/log/leaves` answer carries: it stops
/// early (at least one leaf) and the client asks again from there.
pub const MAX_LEAVES_BYTES: usize = 8 << 20;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    store: Arc<RwLock<Store>>,
    core: mpsc::Sender<ApiCommand>,
    metrics: Arc<Metrics>,
    token: Arc<String>,
    authority: AuthorityId,
    role: Role,
    genesis: Arc<Genesis>,
    keyring: Arc<KeyRing>,
    max_body: usize,
    max_blob: usize,
    limiter: Arc<Mutex<RateLimiter>>,
    traces: Arc<crate::trace::TraceCache>,
    trusted_proxies: Arc<Vec<IpAddr>>,
    metrics_here: bool,
    inbox: Arc<crate::inbox::AuditInbox>,
}

impl ApiState {
    /// The API state of a node.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<RwLock<Store>>,
        core: mpsc::Sender<ApiCommand>,
        metrics: Arc<Metrics>,
        token: String,
        authority: AuthorityId,
        role: Role,
        genesis: Arc<Genesis>,
        keyring: Arc<KeyRing>,
        cfg: &NodeConfig,
    ) -> Self {
        Self {
            store,
            core,
            metrics,
            token: Arc::new(token),
            authority,
            role,
            genesis,
            keyring,
            max_body: cfg.max_body_bytes,
            max_blob: cfg.max_blob_bytes,
            limiter: Arc::new(Mutex::new(RateLimiter::new(cfg.rate_per_sec, cfg.rate_burst))),
            traces: Default::default(),
            trusted_proxies: Arc::new(cfg.trusted_proxies.clone()),
            metrics_here: cfg.metrics_listen.is_none(),
            inbox: Default::default(),
        }
    }

    /// Keeps the audit material this node's operator tools send in `inbox`
    /// (the one the core serves governance from).
    pub fn with_inbox(mut self, inbox: Arc<crate::inbox::AuditInbox>) -> Self {
        self.inbox = inbox;
        self
    }

    pub(crate) fn traces(&self) -> &crate::trace::TraceCache {
        &self.traces
    }

    pub(crate) fn core(&self) -> &mpsc::Sender<ApiCommand> {
        &self.core
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The API's form of a checkpoint, with its C2SP note.
    /// The API's form of a checkpoint, with the cosignatures `st` keeps for
    /// it and its C2SP note.
    pub(crate) fn checkpoint_answer(&self, st: &Store, c: &SignedCheckpoint) -> CheckpointAnswer {
        let cosignatures = st.cosignatures(c.checkpoint.height).unwrap_or_else(|e| {
            tracing::warn!("cosignatures at height {}: {e}", c.checkpoint.height);
            Vec::new()
        });
        let c2sp = c.to_c2sp(&self.keyring, &cosignatures);
        CheckpointAnswer::new(c, cosignatures, c2sp)
    }

    pub(crate) fn store(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A refused or failed request.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    pub(crate) fn bad(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
    pub(crate) fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, reason)
    }
    pub(crate) fn conflict(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, reason)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("API: {e}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            return self.status.into_response();
        }
        (self.status, Json(ErrorBody { error: self.reason })).into_response()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON body whose every rejection (size, syntax, schema) is a 4xx with a
/// JSON reason.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = BodyBytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), r.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))
    }
}

/// A per-client token bucket.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `ip`; false when it has none left.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() > 100_000 {
            self.buckets.clear();
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, last) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The client a request comes from: its peer address, or, when that is a
/// trusted proxy, the right-most `X-Forwarded-For` address that is not.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
}

/// Per-client rate limit, then every 4xx answered as a JSON reason (the
/// framework's own rejections and 405s included).
async fn limit(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<crate::tls::Peer>>()
        .map(|c| c.0 .0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let ip = client_of(peer, req.headers(), &s.trusted_proxies);
    let ok = s
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take(ip, Instant::now());
    let resp = if ok {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded; retry later").into_response()
    };
    if resp.status().is_client_error() {
        s.metrics.api_refused.fetch_add(1, Relaxed);
        return json_reason(resp).await;
    }
    resp
}

/// A 4xx that is not JSON yet, as `{"error": ...}` with its text (or the
/// status's reason when it has none).
async fn json_reason(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = if text.is_empty() {
        match parts.status {
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint".to_string(),
            st => st.canonical_reason().unwrap_or("refused").to_lowercase(),
        }
    } else {
        text
    };
    let mut out = (parts.status, Json(ErrorBody { error: reason })).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// Which role's admin token a write needs, by method and path.
fn write_role(method: &axum::http::Method, path: &str) -> Option<(Role, &'static str)> {
    use axum::http::Method;
    match (method, path) {
        (&Method::POST, "/v1/sources") => Some((Role::DataSource, "sources")),
        (&Method::POST, "/v1/revocations") => Some((Role::DataSource, "revocations")),
        (&Method::POST, "/v1/policies") => Some((Role::Governance, "policies")),
        (&Method::POST, "/v1/campaigns") => Some((Role::Operator, "campaigns")),
        (&Method::POST, "/v1/events") => Some((Role::Operator, "campaign records")),
        (&Method::PUT, p) if p.starts_with("/v1/blobs/") => Some((Role::Operator, "blobs")),
        (&Method::PUT, p) if p.starts_with("/v1/audit/") => Some((Role::Operator, "audit material")),
        _ => None,
    }
}

/// Authorises a write before anything of its body is read.
async fn admin_gate(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some((role, what)) = write_role(req.method(), req.uri().path()) {
        if let Err(e) = authorize(&s, req.headers(), role, what) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    let max_body = state.max_body;
    let max_blob = state.max_blob;
    let writes = Router::new()
        .route("/v1/sources", post(post_source))
        .route("/v1/policies", post(post_policy))
        .route("/v1/campaigns", post(post_campaign))
        .route("/v1/events", post(post_event))
        .route("/v1/revocations", post(post_revocation))
        .route("/v1/trace", post(crate::trace::post_trace))
        .layer(DefaultBodyLimit::max(max_body));
    let blobs = Router::new()
        .route("/v1/blobs/{digest}", put(put_blob).get(get_blob))
        .route("/v1/audit/{campaign}/context", put(put_audit_context))
        .route("/v1/audit/{campaign}/records/{seq}", put(put_audit_record))
        .layer(DefaultBodyLimit::max(max_blob));
    Router::new()
        .merge(writes)
        .merge(blobs)
        .route("/v1/health", get(health))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/v1/log/leaves", get(leaves))
        .route("/v1/events/{digest}", get(entry_status))
        .route("/v1/entries/{digest}", get(entry_status))
        .route("/v1/proof/inclusion", get(inclusion))
        .route("/v1/proof/consistency", get(consistency))
        .route("/v1/sources/{id}", get(source))
        .route("/v1/campaigns/{id}", get(campaign))
        .route("/v1/campaigns/{id}/entries", get(crate::trace::campaign_entries))
        .route("/v1/sources/{id}/entries", get(crate::trace::source_entries))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), admin_gate))
        .layer(middleware::from_fn_with_state(state.clone(), limit))
        .layer(middleware::from_fn(gzip))
        .with_state(state)
}

/// Whether an `Accept-Encoding` value accepts gzip (named, not with
/// `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|e| {
        let mut parts = e.split(';');
        let named = parts
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("gzip"));
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        named && !refused
    })
}

/// Smallest answer worth compressing.
const GZIP_FROM: usize = 1024;

/// Compresses a JSON or text answer of at least [`GZIP_FROM`] bytes with
/// gzip when the client accepts it (`Accept-Encoding: gzip`): listings are
/// mostly hex, which gzip about halves. Blobs (octet streams) pass as they
/// are.
async fn gzip(req: Request, next: Next) -> Response {
    let accepts = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let resp = next.run(req).await;
    let textual = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/"));
    if !accepts || !textual || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if bytes.len() < GZIP_FROM {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let packed = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&bytes).and_then(|()| z.finish())
    })
    .await;
    match packed {
        Ok(Ok(z)) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts
                .headers
                .insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
            parts
                .headers
                .insert(header::VARY, header::HeaderValue::from_static("accept-encoding"));
            Response::from_parts(parts, axum::body::Body::from(z))
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/metrics` alone, for its own listener (`metrics_listen`).
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_anywhere))
        .fallback(|| async { ApiError::not_found("only /metrics is served here") })
        .with_state(state)
}

fn authorize(s: &ApiState, headers: &HeaderMap, role: Role, what: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this write needs the node's admin token",
            )
        })?;
    let (a, b) = (given.as_bytes(), s.token.as_bytes());
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if !same {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong admin token"));
    }
    if s.role != role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{what} are accepted by a {role} authority's node; this node serves {} ({})",
                s.authority, s.role
            ),
        ));
    }
    Ok(())
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    Digest::from_hex(s).map_err(|_| ApiError::bad(format!("{s:?} is not a 32-byte hex digest")))
}

async fn submit(s: &ApiState, body: EntryBody) -> ApiResult<(StatusCode, Json<SubmitAnswer>)> {
    let (reply, rx) = oneshot::channel();
    s.core
        .send(ApiCommand::Submit {
            body: Box::new(body),
            reply,
        })
        .await
        .map_err(ApiError::internal)?;
    match rx.await.map_err(ApiError::internal)? {
        Ok((digest, status)) => {
            let index = s.store().index_of(&digest).map_err(ApiError::internal)?;
            match (index, status) {
                (Some(index), _) => Ok((
                    StatusCode::OK,
                    Json(SubmitAnswer {
                        digest,
                        state: Some(EntryState::Committed(LogIndex { index })),
                    }),
                )),
                (None, Some(EntryStatus::Refused { by, reason })) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("entry {digest} was refused by {by}: {reason}"),
                )),
                (None, Some(EntryStatus::Expired { reason })) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("entry {digest} expired: {reason}"),
                )),
                (None, st) => Ok((
                    StatusCode::ACCEPTED,
                    Json(SubmitAnswer {
                        digest,
                        state: st.map(EntryState::Uncommitted),
                    }),
                )),
            }
        }
        Err(e) => Err(ApiError::new(
            match e {
                OfferError::Malformed(_) => StatusCode::BAD_REQUEST,
                OfferError::Unplannable(_) => StatusCode::CONFLICT,
                OfferError::NotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
                OfferError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                OfferError::Refused(_) => StatusCode::CONFLICT,
                OfferError::Full { .. } => StatusCode::TOO_MANY_REQUESTS,
                // Only a peer's offer carries signatures.
                OfferError::ExtraSignatures(_) | OfferError::Unsigned(_) => StatusCode::BAD_REQUEST,
            },
            e.to_string(),
        )),
    }
}

fn own_authority(s: &ApiState, a: &AuthorityId) -> Result<(), ApiError> {
    if a != &s.authority {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this node signs for {}, not {a}", s.authority),
        ));
    }
    Ok(())
}

async fn post_source(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(m): JsonBody<DataSourceManifest>,
) -> ApiResult<(StatusCode, Json<SubmitAnswer>)> {
    authorize(&s, &h, Role::DataSource, "sources")?;
    own_authority(&s, &m.authority)?;
    submit(&s, EntryBody::Manifest(m)).await
}

async fn post_policy(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(p): JsonBody<PolicyArtifact>,
) -> ApiResult<(StatusCode, Json<SubmitAnswer>)> {
    authorize(&s, &h, Role::Governance, "policies")?;
    own_authority(&s, &p.authority)?;
    submit(&s, EntryBody::Policy(p)).await
}

async fn post_campaign(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(c): JsonBody<Campaign>,
) -> ApiResult<(StatusCode, Json<SubmitAnswer>)> {
    authorize(&s, &h, Role::Operator, "campaigns")?;
    own_authority(&s, &c.operator)?;
    submit(&s, EntryBody::Campaign(c)).await
}

async fn post_revocation(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(r): JsonBody<Revocation>,
) -> ApiResult<(StatusCode, Json<SubmitAnswer>)> {
    authorize(&s, &h, Role::DataSource, "revocations")?;
    own_authority(&s, &r.authority)?;
    submit(&s, EntryBody::Revocation(r)).await
}

async fn post_event(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(body): JsonBody<EntryBody>,
) -> ApiResult<(StatusCode, Json<SubmitAnswer>)> {
    authorize(&s, &h, Role::Operator, "campaign records")?;
    // Campaign records and closes: the bodies that belong to a campaign.
    let Some(&campaign) = body.campaign_id() else {
        return Err(ApiError::bad(
            "/v1/events takes Step, Composite, Refusal, RefusalAggregate or CampaignClose",
        ));
    };
    let operator = provenance::LedgerView::campaign(s.store().state(), &campaign).map(|c| c.operator.clone());
    if let Some(op) = operator {
        own_authority(&s, &op)?;
    }
    submit(&s, body).await
}

async fn put_blob(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(d): Path<String>,
    body: BodyBytes,
) -> ApiResult<(StatusCode, Json<BlobAnswer>)> {
    authorize(&s, &h, Role::Operator, "blobs")?;
    let want = parse_digest(&d)?;
    let got = storage::blob_digest(&body);
    if got != want {
        return Err(ApiError::bad(format!("the body's digest is {got}, not {want}")));
    }
    s.store().put_blob(&body).map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(BlobAnswer {
            digest: got,
            bytes: body.len() as u64,
        }),
    ))
}

/// The operator's tools hand this node a campaign's audit context
/// (`tuner::material::AuditContext`), for governance only.
async fn put_audit_context(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(c): Path<String>,
    body: BodyBytes,
) -> ApiResult<StatusCode> {
    authorize(&s, &h, Role::Operator, "audit material")?;
    let campaign = parse_digest(&c)?;
    tuner::material::AuditContext::from_bytes(&body)
        .map_err(|e| ApiError::bad(format!("not an audit context: {e}")))?;
    s.inbox
        .put(campaign, crate::inbox::AuditPart::Context, body.to_vec());
    Ok(StatusCode::NO_CONTENT)
}

/// The operator's tools hand this node the audit material of the training
/// record at position `seq` (`tuner::material::AuditMaterial`), for
/// governance only.
async fn put_audit_record(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path((c, seq)): Path<(String, u64)>,
    body: BodyBytes,
) -> ApiResult<StatusCode> {
    authorize(&s, &h, Role::Operator, "audit material")?;
    let campaign = parse_digest(&c)?;
    let found = tuner::material::AuditMaterial::position(&body)
        .map_err(|e| ApiError::bad(format!("not audit material: {e}")))?;
    if found != seq {
        return Err(ApiError::bad(format!(
            "the material is of record {found}, not {seq}"
        )));
    }
    s.inbox
        .put(campaign, crate::inbox::AuditPart::Record(seq), body.to_vec());
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/blobs/{digest}`'s query.
#[derive(Debug, Default, serde::Deserialize)]
struct BlobQuery {
    /// Only this node's own copy: 404 rather than fetching from peers.
    #[serde(default)]
    local: bool,
}

async fn get_blob(State(s): State<ApiState>, Path(d): Path<String>, Query(q): Query<BlobQuery>) -> ApiResult {
    let d = parse_digest(&d)?;
    let local = s.store().blob(&d).map_err(ApiError::internal)?;
    let bytes = match local {
        Some(b) => b,
        None if q.local => return Err(ApiError::not_found(format!("this node does not hold blob {d}"))),
        None => {
            let (reply, rx) = oneshot::channel();
            s.core
                .send(ApiCommand::FetchBlob { digest: d, reply })
                .await
                .map_err(ApiError::internal)?;
            rx.await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found(format!("no node has blob {d}")))?
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn health(State(s): State<ApiState>) -> Json<HealthAnswer> {
    let st = s.store();
    let head = st.head();
    Json(HealthAnswer {
        genesis: s.genesis.digest(),
        authority: s.authority.clone(),
        role: s.role,
        height: head.height,
        log_size: head.log_size,
        root: head.root,
        checkpoint_height: st.latest_checkpoint().map(|c| c.checkpoint.height),
        peers: s.metrics.peers.load(Relaxed),
        view: s.metrics.view.load(Relaxed),
        mempool: s.metrics.mempool.load(Relaxed),
        pending: s.metrics.pending.load(Relaxed),
    })
}

async fn checkpoint(State(s): State<ApiState>, Query(q): Query<CheckpointQuery>) -> ApiResult {
    let a = {
        let st = s.store();
        let c = match q.height {
            Some(h) => st.checkpoint(h).map_err(ApiError::internal)?,
            None => st.served_checkpoint().cloned(),
        }
        .ok_or_else(|| match q.height {
            Some(_) => ApiError::not_found("no certified checkpoint at that height"),
            None if st.latest_checkpoint().is_some() => {
                ApiError::not_found("no checkpoint has the cosignatures genesis requires yet")
            }
            None => ApiError::not_found("no certified checkpoint yet"),
        })?;
        s.checkpoint_answer(&st, &c)
    };
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(a).into_response()),
        Some("c2sp") => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], a.c2sp).into_response()),
        Some(f) => Err(ApiError::bad(format!("unknown format {f:?}; use json or c2sp"))),
    }
}

async fn leaves(State(s): State<ApiState>, Query(r): Query<LeavesQuery>) -> ApiResult<Json<LeavesAnswer>> {
    let st = s.store();
    let size = st.head().log_size;
    if r.start > r.end || r.end > size {
        return Err(ApiError::bad(format!(
            "need start <= end <= log size {size}, got {}..{}",
            r.start, r.end
        )));
    }
    if r.end - r.start > MAX_LEAVES {
        return Err(ApiError::bad(format!("at most {MAX_LEAVES} leaves per request")));
    }
    let mut out = Vec::new();
    let mut total = 0usize;
    for i in r.start..r.end {
        if total >= MAX_LEAVES_BYTES {
            break;
        }
        let bytes = st
            .entry_bytes(i)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("leaf {i} missing")))?;
        let e: provenance::LedgerEntry = provenance::decode(&bytes).map_err(ApiError::internal)?;
        total += bytes.len();
        out.push(LogLeaf {
            index: i,
            digest: e.body.digest(),
            leaf: Bytes(bytes),
        });
    }
    Ok(Json(LeavesAnswer {
        log_size: size,
        leaves: out,
    }))
}

async fn entry_status(
    State(s): State<ApiState>,
    Path(d): Path<String>,
) -> ApiResult<(StatusCode, Json<EntryAnswer>)> {
    let d = parse_digest(&d)?;
    if let Some(a) = committed_status(&s, &d)? {
        return Ok((StatusCode::OK, Json(a)));
    }
    let (reply, rx) = oneshot::channel();
    s.core
        .send(ApiCommand::Status { digest: d, reply })
        .await
        .map_err(ApiError::internal)?;
    match rx.await.map_err(ApiError::internal)? {
        Some(st) => {
            let code = match st {
                EntryStatus::Refused { .. } | EntryStatus::Expired { .. } => StatusCode::OK,
                EntryStatus::Pending { .. } => StatusCode::ACCEPTED,
            };
            Ok((
                code,
                Json(EntryAnswer {
                    digest: d,
                    state: EntryState::Uncommitted(st),
                }),
            ))
        }
        // Committed between the two looks: the core forgot it because the
        // store has it now.
        None => match committed_status(&s, &d)? {
            Some(a) => Ok((StatusCode::OK, Json(a))),
            None => Err(ApiError::not_found(format!("entry {d} is unknown to this node"))),
        },
    }
}

fn committed_status(s: &ApiState, d: &Digest) -> Result<Option<EntryAnswer>, ApiError> {
    let d = *d;
    let committed = {
        let st = s.store();
        match st.index_of(&d).map_err(ApiError::internal)? {
            Some(index) => {
                let cp = st
                    .served_checkpoint()
                    .cloned()
                    .filter(|c| c.checkpoint.size > index);
                let size = cp
                    .as_ref()
                    .map(|c| c.checkpoint.size)
                    .unwrap_or(st.head().log_size);
                let proof = st
                    .inclusion_proof(index, size)
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::internal("no inclusion proof"))?;
                let leaf = st
                    .entry_bytes(index)
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::internal("leaf missing"))?;
                Some(EntryAnswer {
                    digest: d,
                    state: EntryState::Committed(CommittedEntry {
                        index,
                        size,
                        leaf: Bytes(leaf),
                        proof,
                        checkpoint: cp.map(|c| s.checkpoint_answer(&st, &c)),
                    }),
                })
            }
            None => None,
        }
    };
    Ok(committed)
}

async fn inclusion(
    State(s): State<ApiState>,
    Query(q): Query<InclusionQuery>,
) -> ApiResult<Json<InclusionAnswer>> {
    let st = s.store();
    let size = st.head().log_size;
    if q.index >= q.size || q.size > size {
        return Err(ApiError::bad(format!(
            "need index < size <= log size {size}, got index {} size {}",
            q.index, q.size
        )));
    }
    let p = st
        .inclusion_proof(q.index, q.size)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::bad("no such proof"))?;
    let leaf = st
        .entry_bytes(q.index)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("leaf missing"))?;
    Ok(Json(InclusionAnswer {
        index: q.index,
        size: q.size,
        leaf: Bytes(leaf),
        proof: p,
    }))
}

async fn consistency(
    State(s): State<ApiState>,
    Query(q): Query<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyAnswer>> {
    let st = s.store();
    let size = st.head().log_size;
    if q.first > q.second || q.second > size {
        return Err(ApiError::bad(format!(
            "need first <= second <= log size {size}, got {} and {}",
            q.first, q.second
        )));
    }
    let p = st
        .consistency_proof(q.first, q.second)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::bad("no such proof"))?;
    Ok(Json(ConsistencyAnswer {
        first: q.first,
        second: q.second,
        proof: p,
    }))
}

async fn source(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<SourceAnswer>> {
    let id = parse_digest(&id)?;
    let st = s.store();
    let src = st
        .state()
        .source_state(&id)
        .ok_or_else(|| ApiError::not_found(format!("source {id} is not registered")))?;
    let index = st.index_of(&id).map_err(ApiError::internal)?;
    let leaf = match index {
        Some(i) => st.entry_bytes(i).map_err(ApiError::internal)?.map(Bytes),
        None => None,
    };
    Ok(Json(SourceAnswer {
        id,
        manifest: src.manifest.clone(),
        registered: src.registered,
        revoked: src.revoked,
        index,
        leaf,
    }))
}

async fn campaign(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<CampaignAnswer>> {
    let id = parse_digest(&id)?;
    let st = s.store();
    let c = st
        .state()
        .campaign_state(&id)
        .ok_or_else(|| ApiError::not_found(format!("campaign {id} is not registered")))?;
    let order_checkpoint = st
        .order_checkpoint(&id)
        .map_err(ApiError::internal)?
        .map(|cp| s.checkpoint_answer(&st, &cp));
    Ok(Json(CampaignAnswer {
        id,
        campaign: c.campaign.clone(),
        head: c.head,
        entries: c.entries,
        closed: c.closed,
        index: st.index_of(&id).map_err(ApiError::internal)?,
        order_checkpoint,
    }))
}

async fn metrics(State(s): State<ApiState>) -> Response {
    if !s.metrics_here {
        return ApiError::not_found("metrics are served on this node's metrics_listen address")
            .into_response();
    }
    metrics_anywhere(State(s)).await
}

async fn metrics_anywhere(State(s): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn gzip_is_accepted_when_named_and_not_refused() {
        use super::accepts_gzip;
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("br, GZIP;q=0.8"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, gzip; q=0.0"));
        assert!(!accepts_gzip("deflate, x-gzip"));
        assert!(!accepts_gzip(""));
    }

    use super::*;

    #[test]
    fn the_rate_limiter_refuses_beyond_the_burst_and_refills() {
        let mut r = RateLimiter::new(10, 3);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let t = Instant::now();
        assert!(r.take(ip, t) && r.take(ip, t) && r.take(ip, t));
        assert!(!r.take(ip, t));
        assert!(r.take(ip, t + std::time::Duration::from_millis(150)));
        assert!(r.take(IpAddr::from([10, 0, 0, 1]), t));
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_last_untrusted_forwarded_address() {
        let proxy = IpAddr::from([10, 0, 0, 1]);
        let inner = IpAddr::from([10, 0, 0, 2]);
        let client = IpAddr::from([203, 0, 113, 7]);
        let mut h = HeaderMap::new();
        // A client may put anything first; only what the proxies appended
        // counts.
        h.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.7, 10.0.0.2".parse().expect("header"),
        );
        assert_eq!(client_of(proxy, &h, &[proxy, inner]), client);
        // Not from a trusted proxy: the header is ignored.
        assert_eq!(client_of(client, &h, &[proxy, inner]), client);
        let other = IpAddr::from([192, 0, 2, 9]);
        assert_eq!(client_of(other, &h, &[proxy]), other);
        // No usable header: the proxy itself.
        assert_eq!(client_of(proxy, &HeaderMap::new(), &[proxy]), proxy);
        // Two clients behind one proxy get two buckets.
        let mut r = RateLimiter::new(1, 1);
        let t = Instant::now();
        let mut a = HeaderMap::new();
        a.insert("x-forwarded-for", "203.0.113.7".parse().expect("header"));
        let mut b = HeaderMap::new();
        b.insert("x-forwarded-for", "203.0.113.8".parse().expect("header"));
        assert!(r.take(client_of(proxy, &a, &[proxy]), t));
        assert!(r.take(client_of(proxy, &b, &[proxy]), t));
        assert!(!r.take(client_of(proxy, &a, &[proxy]), t));
    }
}
