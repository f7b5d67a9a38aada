//! Offline bundles: everything one check read from a node (each answer by
//! its path: checkpoints with their signatures and cosignatures, entries,
//! proofs, listings, and for `--recompute` the blobs) and the files it was
//! given, in one canonical file. `govtune verify --genesis G --bundle FILE`
//! runs the same check on it with no network: the bundle is trusted for
//! nothing, every answer in it is checked exactly as a node's would be.
//!
//! The file is
//!
//! ```text
//! "govtune-bundle/v1\n"
//! genesis digest (32 bytes)
//! u32 n, then n predicate arguments         (each u32 length, UTF-8)
//! u32 n, then n inputs, by ascending name   (name: u32 length, UTF-8; bytes: u64 length)
//! u32 n, then n answers, by ascending path  (path: u32 length, UTF-8; u16 HTTP status; body: u64 length)
//! ```
//!
//! integers big-endian, nothing after the last answer. A reader refuses
//! anything else (an unsorted or repeated path, a length past the end, a
//! status other than 200 or 400..=599), so a file has one reading and one encoding.

use std::collections::BTreeMap;

use provenance::Digest;

/// The format line that starts a bundle.
pub const MAGIC: &[u8] = b"govtune-bundle/v1\n";
/// Largest bundle read (bytes).
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;
/// Most items in one list.
const MAX_ITEMS: usize = 1 << 20;

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle of this format, or not in canonical form.
    #[error("not a govtune-bundle/v1 file: {0}")]
    Malformed(String),
}

fn bad(s: impl Into<String>) -> BundleError {
    BundleError::Malformed(s.into())
}

/// One recorded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// HTTP status.
    pub status: u16,
    /// Body (decompressed; a JSON answer in its canonical form).
    pub body: Vec<u8>,
}

/// A bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bundle {
    /// The genesis digest of the consortium it is of.
    pub genesis: Digest,
    /// The predicate and its arguments (`verify`'s subcommand line).
    pub predicate: Vec<String>,
    /// The files the check read, by the name it was given them by.
    pub inputs: BTreeMap<String, Vec<u8>>,
    /// Each answer it read, by path.
    pub answers: BTreeMap<String, Recorded>,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BundleError> {
        if n > self.bytes.len() {
            return Err(bad(format!(
                "{what}: {n} bytes claimed, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u16(&mut self, what: &str) -> Result<u16, BundleError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<usize, BundleError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self, what: &str) -> Result<usize, BundleError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_be_bytes(a)).map_err(|_| bad(format!("{what}: length out of range")))
    }

    fn text(&mut self, what: &str) -> Result<String, BundleError> {
        let n = self.u32(what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }

    fn count(&mut self, what: &str) -> Result<usize, BundleError> {
        let n = self.u32(what)?;
        if n > MAX_ITEMS {
            return Err(bad(format!("{n} {what}")));
        }
        Ok(n)
    }
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

impl Bundle {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.genesis.0);
        out.extend_from_slice(&(self.predicate.len() as u32).to_be_bytes());
        for a in &self.predicate {
            put_text(&mut out, a);
        }
        out.extend_from_slice(&(self.inputs.len() as u32).to_be_bytes());
        for (name, bytes) in &self.inputs {
            put_text(&mut out, name);
            put_bytes(&mut out, bytes);
        }
        out.extend_from_slice(&(self.answers.len() as u32).to_be_bytes());
        for (path, r) in &self.answers {
            put_text(&mut out, path);
            out.extend_from_slice(&r.status.to_be_bytes());
            put_bytes(&mut out, &r.body);
        }
        out
    }

    /// Reads a bundle, refusing any byte sequence that is not the
    /// canonical encoding of one.
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(bad("larger than 1 GiB"));
        }
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("it does not start with the govtune-bundle/v1 line"))?;
        let mut r = Reader { bytes: rest };
        let mut genesis = [0u8; 32];
        genesis.copy_from_slice(r.take(32, "genesis digest")?);
        let mut b = Bundle {
            genesis: Digest(genesis),
            ..Bundle::default()
        };
        for _ in 0..r.count("predicate arguments")? {
            b.predicate.push(r.text("a predicate argument")?);
        }
        for _ in 0..r.count("inputs")? {
            let name = r.text("an input name")?;
            let n = r.u64("an input")?;
            let bytes = r.take(n, "an input")?.to_vec();
            if b.inputs.last_key_value().is_some_and(|(last, _)| *last >= name) {
                return Err(bad("inputs out of order or repeated"));
            }
            b.inputs.insert(name, bytes);
        }
        for _ in 0..r.count("answers")? {
            let path = r.text("a path")?;
            let status = r.u16("a status")?;
            // A GET is answered 200 or with an error.
            if status != 200 && !(400..=599).contains(&status) {
                return Err(bad(format!("status {status}")));
            }
            let n = r.u64("an answer")?;
            let body = r.take(n, "an answer")?.to_vec();
            if b.answers.last_key_value().is_some_and(|(last, _)| *last >= path) {
                return Err(bad("answers out of order or repeated"));
            }
            b.answers.insert(path, Recorded { status, body });
        }
        if !r.bytes.is_empty() {
            return Err(bad(format!("{} bytes after the last answer", r.bytes.len())));
        }
        Ok(b)
    }
}

/// The form in which a JSON answer is kept in a bundle: the answer with the
/// fields no check reads set to their empty values (which a replayed
/// answer must then hold), so that every byte of a bundle is checked.
pub trait BundleForm: Sized {
    /// The answer as a bundle keeps it.
    fn bundle_form(self) -> Self {
        self
    }
}

use provenance::api as a;

impl BundleForm for a::CheckpointAnswer {}
impl BundleForm for a::InclusionAnswer {}
impl BundleForm for a::ConsistencyAnswer {}
impl BundleForm for a::HealthAnswer {}
impl BundleForm for a::LeavesAnswer {}
impl BundleForm for a::CampaignAnswer {}
impl BundleForm for a::TraceAnswer {}

/// A verifier reads only where an entry is from its status (it then
/// proves the entry under its own checkpoint).
impl BundleForm for a::EntryAnswer {
    fn bundle_form(mut self) -> Self {
        if let a::EntryState::Committed(c) = &mut self.state {
            c.size = 0;
            c.leaf = provenance::Bytes::default();
            c.proof.clear();
            c.checkpoint = None;
        }
        self
    }
}

/// How many listed entries a checkpoint does not cover is not checked.
impl BundleForm for a::ListingAnswer {
    fn bundle_form(mut self) -> Self {
        self.uncertified = 0;
        self
    }
}

/// A verifier reads a source's manifest (which must hash to its id) and
/// whether it is revoked, not where or when it was registered.
impl BundleForm for a::SourceAnswer {
    fn bundle_form(mut self) -> Self {
        self.registered = provenance::Timestamp(0);
        self.index = None;
        self.leaf = None;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        let mut b = Bundle {
            genesis: Digest([3; 32]),
            predicate: vec!["source".into(), "ab".into()],
            ..Bundle::default()
        };
        b.inputs.insert("answer.json".into(), b"{}".to_vec());
        b.answers.insert(
            "/v1/checkpoint".into(),
            Recorded {
                status: 200,
                body: b"{\"a\":1}".to_vec(),
            },
        );
        b.answers.insert(
            "/v1/sources/ab".into(),
            Recorded {
                status: 404,
                body: b"{}".to_vec(),
            },
        );
        b
    }

    #[test]
    fn a_bundle_round_trips_and_every_truncation_or_extra_byte_is_refused() {
        let b = sample();
        let bytes = b.encode();
        assert_eq!(Bundle::decode(&bytes), Ok(b));
        for n in 0..bytes.len() {
            assert!(Bundle::decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Bundle::decode(&longer).is_err());
    }

    #[test]
    fn every_byte_flip_decodes_to_another_bundle_or_is_refused() {
        let b = sample();
        let bytes = b.encode();
        for i in 0..bytes.len() {
            let mut f = bytes.clone();
            f[i] ^= 0x01;
            if let Ok(other) = Bundle::decode(&f) {
                assert_ne!(other, b, "a flip at {i} read as the same bundle");
                assert_eq!(other.encode(), f, "one encoding per bundle");
            }
        }
    }
}
