//! A small blocking client of a node's HTTP API (http or https), for tools,
//! tests and the testnet runner. It trusts nothing it reads: see
//! [`crate::light`] for the checks a verifier makes on what it fetches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use provenance::{Digest, EntryBody};
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
    fetched: Arc<AtomicU64>,
}

/// An answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
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
            agent: agent(Duration::from_secs(30)),
            fetched: Arc::default(),
        }
    }

    /// The same client with another request timeout (a trace may take
    /// longer than the default 30 s on a slow machine).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = agent(timeout);
        self
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
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| transport(e, &url))?;
        self.fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
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

    /// GET a JSON path.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let r = self.agent.get(&url).call();
        self.json(url, r)
    }

    /// GET raw text or bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path);
        let r = self.agent.get(&url).call();
        self.read(url, r).map(|(_, b)| b)
    }

    /// POST JSON (with the token, if any).
    pub fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let mut req = self.agent.post(&url);
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", &b);
        }
        let r = req.send_json(body);
        self.json(url, r)
    }

    /// POST raw bytes as JSON content (for tests of malformed input).
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let mut req = self.agent.post(&url).header("Content-Type", "application/json");
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", &b);
        }
        let r = req.send(body);
        self.json(url, r)
    }

    /// PUT a blob.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, ClientError> {
        let d = provenance::digest::tagged_hash(provenance::ObjectKind::Blob, bytes);
        let url = self.url(&format!("/v1/blobs/{}", d.to_hex()));
        let mut req = self
            .agent
            .put(&url)
            .header("Content-Type", "application/octet-stream");
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", &b);
        }
        let r = req.send(bytes);
        self.read(url, r)?;
        Ok(d)
    }

    /// Submits a campaign record (step, composite, refusal, aggregate,
    /// close) to `/v1/events`.
    pub fn submit_event(&self, body: &EntryBody) -> Result<Answer, ClientError> {
        self.post("/v1/events", body)
    }

    /// `/v1/health`.
    pub fn health(&self) -> Result<Value, ClientError> {
        Ok(self.get("/v1/health")?.body)
    }

    /// The status of an entry (`/v1/events/{digest}`).
    pub fn status(&self, digest: &Digest) -> Result<Answer, ClientError> {
        self.get(&format!("/v1/events/{}", digest.to_hex()))
    }

    /// Waits until every digest is committed (or one is refused).
    pub fn wait_committed(&self, digests: &[Digest], timeout: Duration) -> Result<(), ClientError> {
        let deadline = std::time::Instant::now() + timeout;
        for d in digests {
            loop {
                let a = self.status(d);
                if let Ok(a) = &a {
                    match a.body["status"].as_str() {
                        Some("committed") => break,
                        Some("refused") => {
                            return Err(ClientError::Decode(format!("entry {d} was refused: {}", a.body)))
                        }
                        _ => {}
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

/// Reads a digest field of a JSON answer.
pub fn digest_field(v: &Value, field: &str) -> Result<Digest, ClientError> {
    v[field]
        .as_str()
        .and_then(|s| Digest::from_hex(s).ok())
        .ok_or_else(|| ClientError::Decode(format!("answer has no digest {field:?}: {v}")))
}
