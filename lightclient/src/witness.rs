//! A witness of consortium logs (C2SP tlog-witness), run by a party outside
//! the consortium (nodes submit to it: `node::witnessing`).
//!
//! A witness holds its own Ed25519 key and, per log it knows (each
//! genesis it is given), the last checkpoint it cosigned. It cosigns a
//! submitted checkpoint only when the consortium signed it (the BLS line or
//! q validators' lines, every line present valid) and it extends that last
//! checkpoint (a consistency proof from the size the client names, which
//! must be the one it holds); the new checkpoint is persisted (written to
//! a temporary file, synced and renamed) before the cosignature is
//! returned. A checkpoint the consortium signed that does not extend it is
//! refused and kept in `evidence/`: one of the size cosigned with another
//! root or index (`fork-*`) is, with the state, proof that the consortium
//! signed two logs; one whose proof fails (`unproven-*`) may be a faulty
//! submitter's. The witness vouches for the root at each size and, at the
//! size it holds, for the index line; an index that grows with the log is
//! the validators' word (each signs only the index its own store computed).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use provenance::merkle::{verify_consistency, LogHasher};
use provenance::note;
use provenance::{Checkpoint, Cosignature, Digest, KeyRing, SignedCheckpoint};
use serde::{Deserialize, Serialize};

/// Largest add-checkpoint request body (bytes).
pub const MAX_REQUEST_BYTES: usize = 128 * 1024;
/// Most refused checkpoints kept as evidence (each at most
/// [`MAX_REQUEST_BYTES`]): a submitter that keeps sending bad proofs cannot
/// fill the witness's disk.
pub const MAX_EVIDENCE: usize = 1_000;

const KEY_FORMAT: &str = "govtune-witness-key/v1";
const STATE_FORMAT: &str = "govtune-witness-state/v1";

/// Why a witness could not start or keep its state.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A key, state or genesis file is not what it should be.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> WitnessError + '_ {
    move |e| WitnessError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A refused add-checkpoint request: its HTTP status and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the request is malformed, or its old size exceeds the
    /// checkpoint's.
    BadRequest(String),
    /// 403: the checkpoint is not signed as the consortium signs.
    Forbidden(String),
    /// 404: the witness knows no log of that origin.
    UnknownLog(String),
    /// 409: the old size is not the one the witness holds (its size is
    /// given), or the same size with another root.
    Conflict {
        /// The size of the latest checkpoint it cosigned.
        size: u64,
        /// Why.
        reason: String,
    },
    /// 422: the consistency proof does not verify.
    Unprocessable(String),
    /// 500: the witness could not persist its state.
    Internal(String),
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::Unprocessable(_) => 422,
            Refusal::Internal(_) => 500,
        }
    }

    /// The response body: the held size and a newline for 409 (as C2SP
    /// requires, content type `text/x.tlog.size`), the reason otherwise.
    pub fn body(&self) -> String {
        match self {
            Refusal::Conflict { size, .. } => format!("{size}\n"),
            Refusal::BadRequest(r)
            | Refusal::Forbidden(r)
            | Refusal::UnknownLog(r)
            | Refusal::Unprocessable(r)
            | Refusal::Internal(r) => format!("{r}\n"),
        }
    }
}

/// The witness's key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    name: String,
    /// Ed25519 secret seed, hex.
    secret: String,
}

/// What a witness holds for one log: the last checkpoint it cosigned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogState {
    format: String,
    origin: String,
    size: u64,
    root: Digest,
    /// The note body it cosigned.
    body: String,
}

/// Writes a new witness key named `name` into `dir/witness.key` (mode
/// 0600; an existing key is never overwritten) and returns its verifier
/// key, `<name>+<key id>+<base64 key>`, for the consortium's genesis.
pub fn init(dir: &Path, name: &str) -> Result<String, WitnessError> {
    note::check_key_name(name).map_err(|e| WitnessError::Invalid(e.to_string()))?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let file = KeyFile {
        format: KEY_FORMAT.into(),
        name: name.into(),
        secret: hex::encode(seed),
    };
    let path = dir.join("witness.key");
    let text = serde_json::to_vec_pretty(&file).map_err(|e| WitnessError::Invalid(e.to_string()))?;
    genesis::write_new(&path, &text, 0o600).map_err(|e| WitnessError::Invalid(e.to_string()))?;
    Ok(note::verifier_key(
        name,
        note::COSIGNATURE_V1,
        &key.verifying_key().to_bytes(),
    ))
}

/// A witness: its key, the logs it knows and its state folder.
pub struct Witness {
    name: String,
    key: ed25519_dalek::SigningKey,
    dir: PathBuf,
    logs: BTreeMap<String, KeyRing>,
    /// Held while a request's check and the persisting of its checkpoint
    /// run, so two requests never interleave (C2SP's rollback race).
    lock: Mutex<()>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("name", &self.name)
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Witness {
    /// Opens the witness in `dir` (its key from `dir/witness.key`, which
    /// must not be readable by others) for the logs of `genesis_files`.
    pub fn open(dir: &Path, genesis_files: &[PathBuf]) -> Result<Self, WitnessError> {
        let path = dir.join("witness.key");
        let text = genesis::read_secret(&path).map_err(|e| WitnessError::Invalid(e.to_string()))?;
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| WitnessError::Invalid(format!("{}: {e}", path.display())))?;
        if file.format != KEY_FORMAT {
            return Err(WitnessError::Invalid(format!(
                "{}: format {:?}, expected {KEY_FORMAT:?}",
                path.display(),
                file.format
            )));
        }
        let seed: [u8; 32] = hex::decode(&file.secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                WitnessError::Invalid(format!("{}: secret is not 32 hex bytes", path.display()))
            })?;
        let mut logs = BTreeMap::new();
        for g in genesis_files {
            let (genesis, keyring) =
                genesis::load_genesis(g).map_err(|e| WitnessError::Invalid(e.to_string()))?;
            if logs.insert(genesis.origin.clone(), keyring).is_some() {
                return Err(WitnessError::Invalid(format!(
                    "two genesis files name the log {:?}",
                    genesis.origin
                )));
            }
        }
        for sub in ["logs", "evidence"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(Self {
            name: file.name,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
            dir: dir.to_path_buf(),
            logs,
            lock: Mutex::new(()),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its verifier key text.
    pub fn verifier_key(&self) -> String {
        note::verifier_key(
            &self.name,
            note::COSIGNATURE_V1,
            &self.key.verifying_key().to_bytes(),
        )
    }

    /// The logs it knows, by origin.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.logs.keys().map(String::as_str)
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        let h = <sha2::Sha256 as sha2::Digest>::digest(origin.as_bytes());
        self.dir.join("logs").join(hex::encode(h))
    }

    /// The last checkpoint it cosigned for `origin`.
    pub fn held(&self, origin: &str) -> Result<Option<Checkpoint>, WitnessError> {
        let path = self.state_path(origin);
        match fs::read(&path) {
            Ok(bytes) => {
                let s: LogState = serde_json::from_slice(&bytes)
                    .map_err(|e| WitnessError::Invalid(format!("{}: {e}", path.display())))?;
                let c = provenance::checkpoint::parse_body(&s.body)
                    .map_err(|e| WitnessError::Invalid(format!("{}: {e}", path.display())))?;
                if s.format != STATE_FORMAT
                    || s.origin != origin
                    || c.origin != origin
                    || (c.size, c.root) != (s.size, s.root)
                {
                    return Err(WitnessError::Invalid(format!(
                        "{}: not the {STATE_FORMAT} state of {origin:?}",
                        path.display()
                    )));
                }
                Ok(Some(c))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn persist(&self, cp: &SignedCheckpoint) -> Result<(), WitnessError> {
        let c = &cp.checkpoint;
        let state = LogState {
            format: STATE_FORMAT.into(),
            origin: c.origin.clone(),
            size: c.size,
            root: c.root,
            body: c.note_body(),
        };
        let path = self.state_path(&c.origin);
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| WitnessError::Invalid(e.to_string()))?;
        write_atomically(&path, &bytes)
    }

    /// Keeps a refused request whose checkpoint the consortium signed, once
    /// (named by its hash). A `fork` (another root or index at the size
    /// cosigned) is proof that the consortium signed two logs and is always
    /// kept; a proof that does not verify may be a faulty submitter's, and
    /// at most [`MAX_EVIDENCE`] of those are.
    fn keep_evidence(&self, request: &str, why: &str, fork: bool) {
        let dir = self.dir.join("evidence");
        if !fork && fs::read_dir(&dir).map_or(0, |d| d.count()) >= MAX_EVIDENCE {
            eprintln!(
                "witness: {MAX_EVIDENCE} refused checkpoints already kept; not keeping this one: {why}"
            );
            return;
        }
        let name = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(request.as_bytes()));
        let path = dir.join(format!("{}-{name}.txt", if fork { "fork" } else { "unproven" }));
        let text = format!("{why}\n\n{request}");
        if let Err(e) = fs::write(&path, text) {
            eprintln!("witness: could not keep evidence in {}: {e}", path.display());
        }
    }

    /// Handles an add-checkpoint request body at `now` (POSIX seconds):
    /// the cosignature lines to answer with, or the refusal.
    pub fn add_checkpoint(&self, request: &[u8], now: u64) -> Result<String, Refusal> {
        let bad = |r: &str| Refusal::BadRequest(r.to_string());
        if request.len() > MAX_REQUEST_BYTES {
            return Err(bad("request body too large"));
        }
        let text = std::str::from_utf8(request).map_err(|_| bad("request body is not UTF-8"))?;
        let (old, proof, note_text) = note::parse_witness_request(text).map_err(bad)?;
        let origin = note_text.split('\n').next().unwrap_or_default();
        let keyring = self
            .logs
            .get(origin)
            .ok_or_else(|| Refusal::UnknownLog(format!("unknown log origin {origin:?}")))?;
        let (cp, _) = SignedCheckpoint::from_c2sp(note_text, keyring).map_err(|e| bad(&e.to_string()))?;
        cp.verify(keyring)
            .map_err(|e| Refusal::Forbidden(format!("not signed by the consortium: {e}")))?;
        let c = &cp.checkpoint;
        if old > c.size {
            return Err(bad("old size exceeds the checkpoint's size"));
        }
        if old == 0 && !proof.is_empty() {
            return Err(bad("the proof must be empty from size 0"));
        }
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let held = self.held(origin).map_err(|e| Refusal::Internal(e.to_string()))?;
        let (held_size, held_root) = held.as_ref().map_or((0, Digest::ZERO), |h| (h.size, h.root));
        if old != held_size {
            return Err(Refusal::Conflict {
                size: held_size,
                reason: format!("old size {old} is not {held_size}, the size last cosigned"),
            });
        }
        if old == c.size {
            // The same log at the same size has one root and one index
            // (govtune's extension line, which C2SP leaves to the log).
            if let Some(h) = held.as_ref().filter(|h| (h.root, h.index) != (c.root, c.index)) {
                let why = format!(
                    "a checkpoint of size {} with root {} and index {} where root {} and index {} were cosigned",
                    c.size, c.root, c.index, h.root, h.index
                );
                self.keep_evidence(text, &why, true);
                return Err(Refusal::Conflict {
                    size: held_size,
                    reason: why,
                });
            }
        } else if old > 0 {
            if let Err(e) = verify_consistency::<LogHasher>(old, c.size, &proof, &held_root, &c.root) {
                let why = format!(
                    "the checkpoint of size {} does not extend the one of size {old} cosigned: {e}",
                    c.size
                );
                self.keep_evidence(text, &why, false);
                return Err(Refusal::Unprocessable(why));
            }
        }
        self.persist(&cp).map_err(|e| Refusal::Internal(e.to_string()))?;
        let cosignature = Cosignature::sign(&self.name, &self.key, c, now);
        Ok(cosignature.line(&self.key.verifying_key().to_bytes()).render())
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a torn one: a temporary file, synced, renamed over it, and
/// the folder synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WitnessError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Serves `witness` over HTTP on `listener` until the process ends: `POST
/// /add-checkpoint` (C2SP tlog-witness) and `GET /` (its name and verifier
/// key).
pub fn serve(witness: std::sync::Arc<Witness>, listener: std::net::TcpListener) -> Result<(), WitnessError> {
    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    async fn add(
        State(w): State<std::sync::Arc<Witness>>,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let outcome = tokio::task::spawn_blocking(move || w.add_checkpoint(&body, now)).await;
        match outcome {
            Ok(Ok(lines)) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                lines,
            )
                .into_response(),
            Ok(Err(r)) => {
                let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let content_type = match r {
                    Refusal::Conflict { .. } => "text/x.tlog.size",
                    _ => "text/plain; charset=utf-8",
                };
                if let Refusal::Conflict { reason, .. } = &r {
                    eprintln!("witness: 409: {reason}");
                } else {
                    eprintln!("witness: {}: {}", r.status(), r.body().trim_end());
                }
                (status, [(header::CONTENT_TYPE, content_type)], r.body()).into_response()
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        }
    }

    async fn about(State(w): State<std::sync::Arc<Witness>>) -> String {
        format!("{}\n{}\n", w.name(), w.verifier_key())
    }

    let app = axum::Router::new()
        .route("/add-checkpoint", post(add))
        .route("/", get(about))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(witness);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| WitnessError::Invalid(format!("runtime: {e}")))?;
    rt.block_on(async move {
        listener
            .set_nonblocking(true)
            .map_err(|e| WitnessError::Invalid(e.to_string()))?;
        let l =
            tokio::net::TcpListener::from_std(listener).map_err(|e| WitnessError::Invalid(e.to_string()))?;
        axum::serve(l, app)
            .await
            .map_err(|e| WitnessError::Invalid(format!("serving: {e}")))
    })
}
