//! A small blocking client of a node's HTTP API, for tools, tests and the
//! testnet runner. It trusts nothing it reads: see [`crate::light`] for the
//! checks a verifier makes on what it fetches.

use std::time::Duration;

use provenance::{Digest, EntryBody};
use serde::Serialize;
use serde_json::Value;

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
    fetched: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// An answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

impl Client {
    /// A client of the node at `addr` (`host:port` or a URL).
    pub fn new(addr: &str) -> Self {
        let base = if addr.starts_with("http") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Self {
            base,
            token: None,
            agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build(),
            fetched: Default::default(),
        }
    }

    /// The same client with another request timeout (a trace may take
    /// longer than the default 30 s on a slow machine).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = ureq::AgentBuilder::new().timeout(timeout).build();
        self
    }

    /// Response body bytes this client (and its clones) have read.
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        self.fetched
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The same client, authenticated with an admin token for writes.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.trim().to_string());
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn finish(url: String, r: Result<ureq::Response, ureq::Error>) -> Result<Answer, ClientError> {
        Self::finish_counted(url, r).map(|(a, _)| a)
    }

    fn finish_counted(
        url: String,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<(Answer, usize), ClientError> {
        match r {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.into_string().map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
                let body = if text.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
                };
                Ok((Answer { status, body }, text.len()))
            }
            Err(ureq::Error::Status(status, resp)) => Err(ClientError::Status {
                url,
                status,
                body: resp.into_string().unwrap_or_default(),
            }),
            Err(e) => Err(ClientError::Transport {
                url,
                reason: e.to_string(),
            }),
        }
    }

    fn auth(&self, r: ureq::Request) -> ureq::Request {
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    /// GET a JSON path.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.get(&url).call();
        let (a, n) = Self::finish_counted(url, r)?;
        self.count(n);
        Ok(a)
    }

    /// GET raw text or bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        match self.agent.get(&url).call() {
            Ok(resp) => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut resp.into_reader(), &mut out).map_err(|e| {
                    ClientError::Transport {
                        url: url.clone(),
                        reason: e.to_string(),
                    }
                })?;
                self.count(out.len());
                Ok(out)
            }
            Err(e) => Self::finish(url, Err(e)).map(|_| Vec::new()),
        }
    }

    /// POST JSON (with the token, if any).
    pub fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.auth(self.agent.post(&url)).send_json(body);
        Self::finish(url, r)
    }

    /// POST raw bytes as JSON content (for tests of malformed input).
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self
            .auth(self.agent.post(&url))
            .set("Content-Type", "application/json")
            .send_bytes(body);
        Self::finish(url, r)
    }

    /// POST raw bytes while reading the answer on the same connection, so
    /// that a node which answers before it has read the whole body (413 for a
    /// body over its limit, after reading up to the limit) is heard, not seen
    /// as a broken pipe: a blocking client that writes the whole body first
    /// loses the answer when the node closes the connection. HTTP/1.1 over
    /// plain TCP, `Connection: close`.
    pub fn post_raw_streaming(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        use std::io::{Read, Write};
        let url = format!("{}{path}", self.base);
        let transport = |reason: String| ClientError::Transport {
            url: url.clone(),
            reason,
        };
        let host = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| transport("only http:// URLs are supported here".into()))?;
        let mut stream = std::net::TcpStream::connect(host).map_err(|e| transport(e.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| transport(e.to_string()))?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let mut writer = stream.try_clone().map_err(|e| transport(e.to_string()))?;
        let owned = body.to_vec();
        // The writer may fail once the node has answered and closed: that is
        // the case this method exists for, so its error is not the answer.
        let sender = std::thread::spawn(move || {
            let _ = writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(&owned));
        });
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = sender.join();
        if raw.is_empty() {
            return Err(transport(match read {
                Err(e) => e.to_string(),
                Ok(_) => "the node closed the connection without an answer".into(),
            }));
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| transport("an answer without a complete header".into()))?;
        let header = String::from_utf8_lossy(&raw[..split]).to_string();
        let status: u16 = header
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| transport(format!("not an HTTP status line: {header}")))?;
        let mut content = raw[split + 4..].to_vec();
        if header.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            content = dechunk(&content).ok_or_else(|| transport("a malformed chunked body".into()))?;
        }
        let text = String::from_utf8_lossy(&content).to_string();
        if status >= 400 {
            return Err(ClientError::Status {
                url,
                status,
                body: text,
            });
        }
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    /// PUT a blob.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, ClientError> {
        let d = provenance::digest::tagged_hash(provenance::ObjectKind::Blob, bytes);
        let url = format!("{}/v1/blobs/{}", self.base, d.to_hex());
        let r = self
            .auth(self.agent.put(&url))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes);
        Self::finish(url, r)?;
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

/// The payload of an HTTP/1.1 chunked body, or `None` if it is malformed.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}
