//! A small blocking client of a node's HTTP API (http or https), for tools,
//! tests and the testnet runner. It trusts nothing it reads: see
//! [`crate::light`] for the checks a verifier makes on what it fetches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provenance::api::{
    BlobAnswer, CampaignAnswer, CheckpointAnswer, CheckpointQuery, ConsistencyAnswer, ConsistencyQuery,
    EntryAnswer, EntryState, EntryStatus, HealthAnswer, InclusionAnswer, InclusionQuery, LeavesAnswer,
    LeavesQuery, SourceAnswer, SubmitAnswer, TraceAnswer, TraceRequest,
};
use provenance::{Digest, EntryBody};
use serde::de::DeserializeOwned;

use crate::bundle::{Bundle, BundleForm, Recorded};
use serde::Serialize;
use serde_json::Value;

/// Largest answer body read (bytes): above the API's largest blob, so a
/// node cannot make a client read without end.
pub const MAX_ANSWER_BYTES: u64 = 48 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// URL.
        url: String,
        /// Status.
        status: u16,
        /// Body (the JSON reason).
        body: String,
    },
    /// No answer.
    #[error("{url}: {reason}")]
    Transport {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer that is not what the API documents.
    #[error("{0}")]
    Decode(String),
}

/// An API client for one node.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    timeout: Duration,
    deadline: Option<Instant>,
    fetched: Arc<AtomicU64>,
    /// Every GET's answer and every input file, kept for a bundle.
    recorder: Option<Arc<Mutex<Bundle>>>,
    /// Answers read from a bundle instead of the network.
    replay: Option<Arc<Bundle>>,
}

/// An answer as raw JSON: status and body (for answers read by hand, e.g.
/// tests of malformed input; the API's answers are read with their
/// `provenance::api` types by [`Client::get_json`] and the typed methods).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

/// A request body as compact JSON (ureq's own `send_json` writes it
/// pretty-printed, which can triple a manifest's size and push it over a
/// node's body limit).
fn compact_json<B: Serialize + ?Sized>(url: &str, body: &B) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body).map_err(|e| ClientError::Decode(format!("{url}: the request is not JSON: {e}")))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// An agent whose https accepts only a server certificate from `pinned`
/// (DER), checked with the host name it was dialled by.
fn pinned_agent(pinned: &[Vec<u8>]) -> ureq::Agent {
    let roots: Vec<ureq::tls::Certificate<'static>> = pinned
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into()
}

impl Client {
    /// A client of the node at `addr` (`host:port` or a URL).
    pub fn new(addr: &str) -> Self {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Self {
            base,
            token: None,
            agent: agent(),
            timeout: Duration::from_secs(30),
            deadline: None,
            fetched: Arc::default(),
            recorder: None,
            replay: None,
        }
    }

    /// A client that answers every GET from `bundle` and reads no network:
    /// a path the bundle lacks is an error.
    pub fn from_bundle(bundle: Bundle) -> Self {
        Self {
            base: "bundle:".into(),
            replay: Some(Arc::new(bundle)),
            ..Self::new("http://bundle.invalid")
        }
    }

    /// The same client, keeping every answer it reads and every input file
    /// ([`Client::input`]) for a bundle ([`Client::recorded`]).
    pub fn recording(mut self) -> Self {
        self.recorder = Some(Arc::default());
        self
    }

    /// What this client (and its clones) recorded.
    pub fn recorded(&self) -> Option<Bundle> {
        self.recorder
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Reads an input file (a trace answer, a model's weights): from the
    /// bundle when replaying one, else from disk (and kept when recording).
    pub fn input(&self, path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
        let name = path.to_string_lossy().to_string();
        if let Some(b) = &self.replay {
            return b
                .inputs
                .get(&name)
                .cloned()
                .ok_or_else(|| ClientError::Transport {
                    url: format!("bundle:{name}"),
                    reason: "the bundle holds no such input".into(),
                });
        }
        let bytes = std::fs::read(path).map_err(|e| ClientError::Transport {
            url: name.clone(),
            reason: e.to_string(),
        })?;
        if let Some(r) = &self.recorder {
            r.lock()
                .unwrap_or_else(|p| p.into_inner())
                .inputs
                .insert(name, bytes.clone());
        }
        Ok(bytes)
    }

    fn record(&self, path: &str, status: u16, body: &[u8]) {
        if let Some(r) = &self.recorder {
            r.lock().unwrap_or_else(|p| p.into_inner()).answers.insert(
                path.to_string(),
                Recorded {
                    status,
                    body: body.to_vec(),
                },
            );
        }
    }

    /// A GET's status and body: from the bundle, or from the node (an
    /// error status as [`ClientError::Status`]). `canonical` gives the
    /// form a recorded body is kept in (a JSON answer re-encoded).
    fn fetch(
        &self,
        path: &str,
        canonical: impl Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        if let Some(b) = &self.replay {
            let url = format!("bundle:{path}");
            let r = b.answers.get(path).ok_or_else(|| ClientError::Transport {
                url: url.clone(),
                reason: "the bundle holds no answer to this request".into(),
            })?;
            if r.status >= 400 {
                return Err(ClientError::Status {
                    url,
                    status: r.status,
                    body: String::from_utf8_lossy(&r.body).into_owned(),
                });
            }
            if canonical(&r.body).is_some_and(|c| c != r.body) {
                return Err(ClientError::Decode(format!(
                    "{url}: the answer is not in canonical form"
                )));
            }
            return Ok((r.status, r.body.clone()));
        }
        let url = self.url(path);
        let r = self.timed(&url, self.agent.get(&url))?.call();
        match self.read(url, r) {
            Ok((status, bytes)) => {
                self.record(path, status, &canonical(&bytes).unwrap_or_else(|| bytes.clone()));
                Ok((status, bytes))
            }
            Err(e @ ClientError::Status { .. }) => {
                if let ClientError::Status { status, body, .. } = &e {
                    self.record(path, *status, body.as_bytes());
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The same client accepting over https only a certificate from
    /// `pinned` (DER: those genesis pins for the consortium's nodes), for
    /// the host it dials; with none pinned it is unchanged (the web's
    /// public roots).
    pub fn pinned(mut self, pinned: &[Vec<u8>]) -> Self {
        if !pinned.is_empty() {
            self.agent = pinned_agent(pinned);
        }
        self
    }

    /// The same client with another request timeout, from connecting to
    /// the answer's last byte (a trace may take longer than the default
    /// 30 s on a slow machine).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client with a deadline for all its requests: none may end
    /// after it, so a node that answers every request slowly cannot hold a
    /// run longer than this.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A request with this client's time budget: the request timeout or
    /// what is left before the deadline, whichever is shorter.
    fn timed<B>(
        &self,
        url: &str,
        req: ureq::RequestBuilder<B>,
    ) -> Result<ureq::RequestBuilder<B>, ClientError> {
        let mut budget = self.timeout;
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Transport {
                    url: url.to_string(),
                    reason: "the run's deadline has passed".into(),
                });
            }
            budget = budget.min(left);
        }
        Ok(req
            .header("Accept-Encoding", "gzip")
            .config()
            .timeout_global(Some(budget))
            .build())
    }

    /// Response body bytes this client (and its clones) have read.
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The same client, authenticated with an admin token for writes.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.trim().to_string());
        self
    }

    /// The admin token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// Reads a whole answer (bounded), counting its bytes; an error status
    /// becomes [`ClientError::Status`] with the body as its reason.
    fn read(
        &self,
        url: String,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let transport = |e: ureq::Error, url: &str| ClientError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let mut resp = r.map_err(|e| transport(e, &url))?;
        let status = resp.status().as_u16();
        let gzipped = resp
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| transport(e, &url))?;
        // What crossed the wire: the compressed bytes.
        self.fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let bytes = if gzipped { gunzip(&url, &bytes)? } else { bytes };
        if status >= 400 {
            return Err(ClientError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok((status, bytes))
    }

    fn json(
        &self,
        url: String,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, ClientError> {
        let (status, bytes) = self.read(url, r)?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Answer { status, body })
    }

    /// Reads a whole answer as `T`; a body that is not a `T` is
    /// [`ClientError::Decode`].
    fn typed<T: DeserializeOwned>(
        &self,
        url: String,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.read(url.clone(), r)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{url}: {e}")))
    }

    /// GET a JSON path.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let r = self.timed(&url, self.agent.get(&url))?.call();
        self.json(url, r)
    }

    /// GET a JSON path and read the answer as `T` (a `provenance::api`
    /// answer type). A recorded answer is kept as `T` re-encoded in its
    /// [`BundleForm`], and one read from a bundle must be exactly that.
    pub fn get_json<T: DeserializeOwned + Serialize + BundleForm>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        let reencode = |b: &[u8]| {
            serde_json::from_slice::<T>(b)
                .ok()
                .and_then(|t| serde_json::to_vec(&t.bundle_form()).ok())
        };
        let (_, bytes) = self.fetch(path, reencode)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{}: {e}", self.url(path))))
    }

    /// GET raw text or bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.fetch(path, |_| None).map(|(_, b)| b)
    }

    /// POST JSON (with the token, if any).
    pub fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let mut req = self.timed(&url, self.agent.post(&url))?;
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", &b);
        }
        let r = req
            .header("Content-Type", "application/json")
            .send(compact_json(&url, body)?);
        self.json(url, r)
    }

    /// POST JSON (with the token, if any) and read the answer as `T`.
    pub fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let mut req = self.timed(&url, self.agent.post(&url))?;
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", &b);
        }
        let r = req
            .header("Content-Type", "application/json")
            .send(compact_json(&url, body)?);
        self.typed(url, r)
    }

    /// POST raw bytes as JSON content (for tests of malformed input).
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let mut req = self
            .timed(&url, self.agent.post(&url))?
            .header("Content-Type", "application/json");
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", &b);
        }
        let r = req.send(body);
        self.json(url, r)
    }

    /// PUT a blob; returns its digest (checked against the node's answer).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, ClientError> {
        let d = provenance::digest::tagged_hash(provenance::ObjectKind::Blob, bytes);
        let url = self.url(&format!("/v1/blobs/{}", d.to_hex()));
        let r = self.put_octets(&url, bytes)?;
        let a: BlobAnswer = self.typed(url, r)?;
        if a.digest != d || a.bytes != bytes.len() as u64 {
            return Err(ClientError::Decode(format!(
                "the node stored blob {} ({} bytes), not {d} ({} bytes)",
                a.digest,
                a.bytes,
                bytes.len()
            )));
        }
        Ok(d)
    }

    /// PUT raw bytes to an admin write endpoint (`/v1/audit/...`); the
    /// answer's body is not read.
    pub fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<(), ClientError> {
        let url = self.url(path);
        let r = self.put_octets(&url, bytes)?;
        self.read(url, r).map(|_| ())
    }

    /// PUTs `bytes` as octets to `url`, with the token if any.
    fn put_octets(
        &self,
        url: &str,
        bytes: &[u8],
    ) -> Result<Result<ureq::http::Response<ureq::Body>, ureq::Error>, ClientError> {
        let mut req = self
            .timed(url, self.agent.put(url))?
            .header("Content-Type", "application/octet-stream");
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", &b);
        }
        Ok(req.send(bytes))
    }

    /// Submits an object to a write endpoint (`/v1/sources`, `/v1/policies`,
    /// `/v1/campaigns`, `/v1/events`, `/v1/revocations`); the answer names
    /// its digest and status.
    pub fn submit<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<SubmitAnswer, ClientError> {
        self.post_json(path, body)
    }

    /// Submits a campaign record (step, composite, refusal, aggregate,
    /// close) to `/v1/events`.
    pub fn submit_event(&self, body: &EntryBody) -> Result<SubmitAnswer, ClientError> {
        self.submit("/v1/events", body)
    }

    /// `/v1/health`.
    pub fn health(&self) -> Result<HealthAnswer, ClientError> {
        self.get_json("/v1/health")
    }

    /// The status of an entry (`/v1/events/{digest}`).
    pub fn status(&self, digest: &Digest) -> Result<EntryAnswer, ClientError> {
        self.get_json(&format!("/v1/events/{}", digest.to_hex()))
    }

    /// The latest certified checkpoint, or the one of `height`
    /// (`/v1/checkpoint`; not checked: see [`crate::LightClient`]).
    pub fn checkpoint(&self, height: Option<u64>) -> Result<CheckpointAnswer, ClientError> {
        let q = CheckpointQuery { format: None, height }.to_query();
        self.get_json(&format!(
            "/v1/checkpoint{}{q}",
            if q.is_empty() { "" } else { "?" }
        ))
    }

    /// Leaves `start..end` of the log (`/v1/log/leaves`, at most 256).
    pub fn leaves(&self, start: u64, end: u64) -> Result<LeavesAnswer, ClientError> {
        let q = LeavesQuery { start, end };
        self.get_json(&format!("/v1/log/leaves?{}", q.to_query()))
    }

    /// Leaf `index` and its inclusion proof in the log of `size`
    /// (`/v1/proof/inclusion`).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionAnswer, ClientError> {
        let q = InclusionQuery { index, size };
        self.get_json(&format!("/v1/proof/inclusion?{}", q.to_query()))
    }

    /// The proof that the log of `second` extends the log of `first`
    /// (`/v1/proof/consistency`).
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<ConsistencyAnswer, ClientError> {
        let q = ConsistencyQuery { first, second };
        self.get_json(&format!("/v1/proof/consistency?{}", q.to_query()))
    }

    /// A source's ledger state (`/v1/sources/{id}`).
    pub fn source(&self, id: &Digest) -> Result<SourceAnswer, ClientError> {
        self.get_json(&format!("/v1/sources/{}", id.to_hex()))
    }

    /// A campaign's ledger state (`/v1/campaigns/{id}`).
    pub fn campaign(&self, id: &Digest) -> Result<CampaignAnswer, ClientError> {
        self.get_json(&format!("/v1/campaigns/{}", id.to_hex()))
    }

    /// Asks the node to trace an output (`POST /v1/trace`; may take long:
    /// see [`Client::with_timeout`]).
    pub fn trace(&self, req: &TraceRequest) -> Result<TraceAnswer, ClientError> {
        self.post_json("/v1/trace", req)
    }

    /// Waits until every digest is committed (or one is refused).
    pub fn wait_committed(&self, digests: &[Digest], timeout: Duration) -> Result<(), ClientError> {
        let deadline = std::time::Instant::now() + timeout;
        for d in digests {
            loop {
                let a = self.status(d);
                if let Ok(a) = &a {
                    match &a.state {
                        EntryState::Committed(_) => break,
                        EntryState::Uncommitted(EntryStatus::Refused { by, reason }) => {
                            return Err(ClientError::Decode(format!(
                                "entry {d} was refused by {by}: {reason}"
                            )))
                        }
                        EntryState::Uncommitted(EntryStatus::Expired { reason }) => {
                            return Err(ClientError::Decode(format!("entry {d} expired: {reason}")))
                        }
                        EntryState::Uncommitted(EntryStatus::Pending { .. }) => {}
                    }
                }
                if std::time::Instant::now() > deadline {
                    return Err(ClientError::Decode(format!(
                        "entry {d} not committed in {timeout:?}: {a:?}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        Ok(String::from_utf8_lossy(&self.get_bytes("/metrics")?).into_owned())
    }
}

/// Decompresses a gzip answer, at most [`MAX_ANSWER_BYTES`] of it.
fn gunzip(url: &str, packed: &[u8]) -> Result<Vec<u8>, ClientError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(packed)
        .take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| ClientError::Transport {
            url: url.to_string(),
            reason: format!("a gzip answer that does not decompress: {e}"),
        })?;
    if out.len() as u64 > MAX_ANSWER_BYTES {
        return Err(ClientError::Transport {
            url: url.to_string(),
            reason: format!("a gzip answer over {MAX_ANSWER_BYTES} bytes once decompressed"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(b: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b).expect("write");
        z.finish().expect("finish")
    }

    #[test]
    fn a_gzip_answer_decompresses_and_a_bomb_or_garbage_is_refused() {
        let text = br#"{"entries":[]}"#.repeat(100);
        assert_eq!(gunzip("u", &gzip(&text)).expect("decompresses"), text);
        // Past the answer bound once decompressed, from a few KiB on the wire.
        let bomb = gzip(&vec![0u8; MAX_ANSWER_BYTES as usize + 1]);
        assert!(bomb.len() < 1 << 20);
        let e = gunzip("u", &bomb).expect_err("a bomb");
        assert!(e.to_string().contains("once decompressed"), "{e}");
        assert!(gunzip("u", b"not gzip at all").is_err());
    }
}
