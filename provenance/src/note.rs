//! C2SP signed notes (`c2sp.org/signed-note`) and tlog cosignatures
//! (`c2sp.org/tlog-cosignature`): key ids, verifier keys, signature lines
//! and the message a witness signs. Pure text and hashing.
//!
//! * A signature line is `— <key name> <base64(key id || signature)>`.
//! * A key id is the first four bytes of
//!   `SHA-256(<key name> || "\n" || <type byte> || <public key>)`.
//! * Type 0x01 is an Ed25519 note signature over the note body (each
//!   validator's, named by the log's origin); 0x04 an Ed25519 cosignature
//!   (a witness's, named by the witness) over
//!   `"cosignature/v1\ntime <t>\n" || body`, with the blob
//!   `key id || u64be(t) || signature`.
//! * The consortium's threshold BLS signature is type 0xff followed by the
//!   algorithm's name (see [`crate::checkpoint`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// Signed-note type byte of an Ed25519 note signature.
pub const ED25519: u8 = 0x01;
/// Signed-note type byte of an Ed25519 tlog cosignature (v1).
pub const COSIGNATURE_V1: u8 = 0x04;
/// Most signature lines a note may carry (signed-note's own bound).
pub const MAX_SIGNATURES: usize = 100;

/// The key id of a key named `name` of signature type `kind` (the type
/// byte, followed for type 0xff by the algorithm's name).
pub fn key_id(name: &str, kind: &[u8], public_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(kind);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The verifier key text `<name>+<hex key id>+<base64(type || key)>` of an
/// Ed25519 key of type `kind` ([`ED25519`] or [`COSIGNATURE_V1`]).
pub fn verifier_key(name: &str, kind: u8, public_key: &[u8; 32]) -> String {
    let mut blob = vec![kind];
    blob.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, &[kind], public_key)),
        B64.encode(blob)
    )
}

/// Why a verifier key or a note's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A verifier key is not `<name>+<hex id>+<base64 key>`.
    #[error("malformed verifier key: {0}")]
    VerifierKey(&'static str),
    /// A key name or origin breaks the naming rules.
    #[error("bad name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Which rule.
        reason: &'static str,
    },
}

/// Parses an Ed25519 verifier key of type `kind`: its name and public key.
pub fn parse_verifier_key(text: &str, kind: u8) -> Result<(String, [u8; 32]), NoteError> {
    use NoteError::VerifierKey as Bad;
    // The name and key id hold no `+`; the base64 key may.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Bad("expected <name>+<key id>+<key>"));
    };
    check_key_name(name)?;
    let blob = B64.decode(key).map_err(|_| Bad("key is not base64"))?;
    if blob.len() != 33 || blob[0] != kind {
        return Err(Bad("key is not an Ed25519 key of the expected type"));
    }
    let mut public = [0u8; 32];
    public.copy_from_slice(&blob[1..]);
    if id != hex::encode(key_id(name, &[kind], &public)) {
        return Err(Bad("key id does not match the name and key"));
    }
    ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| Bad("not an Ed25519 public key"))?;
    Ok((name.to_string(), public))
}

/// A key name: non-empty, at most 256 bytes, no white space, no `+`.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    let bad = |reason| {
        Err(NoteError::Name {
            name: name.chars().take(64).collect(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 256 {
        return bad("must be 1 to 256 bytes");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return bad("must hold no white space, control character or '+'");
    }
    Ok(())
}

/// A log origin: a scheme-less URL-like name, `host/path`, ASCII letters,
/// digits and `.-_/`, a host with a dot, no empty path segment, at most 128
/// bytes. Without `:` it can never start a libp2p handshake payload, which
/// the same Ed25519 node keys sign.
pub fn check_origin(origin: &str) -> Result<(), NoteError> {
    let bad = |reason| {
        Err(NoteError::Name {
            name: origin.chars().take(64).collect(),
            reason,
        })
    };
    if origin.is_empty() || origin.len() > 128 {
        return bad("an origin is 1 to 128 bytes");
    }
    if !origin
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_/".contains(&b))
    {
        return bad("an origin holds only ASCII letters, digits and . - _ /");
    }
    let mut segments = origin.split('/');
    let host = segments.next().unwrap_or_default();
    if !host.contains('.') || host.starts_with(['.', '-']) || host.ends_with(['.', '-']) {
        return bad("an origin starts with a host name holding a dot, like example.org/log");
    }
    if segments.clone().next().is_none() || segments.any(str::is_empty) {
        return bad("an origin is host/path, with no empty path segment");
    }
    Ok(())
}

/// A signature line's key name and decoded blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    /// The key name.
    pub name: String,
    /// `key id || signature` (for a cosignature, `key id || time || signature`).
    pub blob: Vec<u8>,
}

impl SignatureLine {
    /// The line's text, with its final newline.
    pub fn render(&self) -> String {
        format!("\u{2014} {} {}\n", self.name, B64.encode(&self.blob))
    }

    /// The key id (the blob's first four bytes).
    pub fn key_id(&self) -> Option<[u8; 4]> {
        self.blob.get(..4).and_then(|b| b.try_into().ok())
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Result<Self, &'static str> {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or("signature lines start with an em dash and a space")?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or("a signature line needs a key name and a signature")?;
        check_key_name(name).map_err(|_| "bad key name in a signature line")?;
        let blob = B64.decode(b64).map_err(|_| "signature is not base64")?;
        if blob.len() < 5 || B64.encode(&blob) != b64 {
            return Err("signature is too short or not canonical base64");
        }
        Ok(Self {
            name: name.to_string(),
            blob,
        })
    }
}

/// Splits a signed note into its body (with the final newline) and its
/// signature lines. Refuses more than [`MAX_SIGNATURES`] lines.
pub fn split(text: &str) -> Result<(&str, Vec<SignatureLine>), &'static str> {
    let split = text.find("\n\n").ok_or("no blank line before the signatures")?;
    let (body, sigs) = (&text[..split + 1], &text[split + 2..]);
    if !sigs.ends_with('\n') {
        return Err("the note must end in a newline");
    }
    let lines = sigs
        .split_terminator('\n')
        .map(SignatureLine::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if lines.is_empty() || lines.len() > MAX_SIGNATURES {
        return Err("a note has 1 to 100 signature lines");
    }
    Ok((body, lines))
}

/// Most consistency proof lines an add-checkpoint request may carry
/// (C2SP tlog-witness's bound).
pub const MAX_PROOF_LINES: usize = 63;

/// A C2SP tlog-witness add-checkpoint request body: `old <size>`, the
/// consistency proof's hashes in base64 one per line, an empty line, the
/// checkpoint's note.
pub fn witness_request(old: u64, proof: &[crate::Digest], note_text: &str) -> String {
    let mut s = format!("old {old}\n");
    for d in proof {
        s.push_str(&B64.encode(d.0));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(note_text);
    s
}

/// Splits an add-checkpoint request body into its old size, its proof and
/// the checkpoint note, refusing anything [`witness_request`] would not
/// write.
pub fn parse_witness_request(text: &str) -> Result<(u64, Vec<crate::Digest>, &str), &'static str> {
    let (first, mut rest) = text.split_once('\n').ok_or("no old size line")?;
    let old = first
        .strip_prefix("old ")
        .filter(|n| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n.len() == 1 || !n.starts_with('0'))
        })
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or("the first line must be `old <size>`, decimal without leading zeros")?;
    let mut proof = Vec::new();
    loop {
        let (line, next) = rest
            .split_once('\n')
            .ok_or("no empty line before the checkpoint")?;
        rest = next;
        if line.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_LINES {
            return Err("more than 63 consistency proof lines");
        }
        let bytes = B64.decode(line).map_err(|_| "a proof line is not base64")?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| "a proof line is not 32 bytes")?;
        proof.push(crate::Digest(hash));
    }
    Ok((old, proof, rest))
}

/// The message a witness signs for a cosignature at `time` (POSIX seconds)
/// over a checkpoint's note body.
pub fn cosignature_message(body: &str, time: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {time}\n{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_keys_round_trip_and_refuse_a_wrong_id() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pk = sk.verifying_key().to_bytes();
        let vkey = verifier_key("witness.example/w1", COSIGNATURE_V1, &pk);
        assert_eq!(
            parse_verifier_key(&vkey, COSIGNATURE_V1),
            Ok(("witness.example/w1".to_string(), pk))
        );
        assert!(parse_verifier_key(&vkey, ED25519).is_err());
        let other = vkey.replacen("witness.example/w1", "witness.example/w2", 1);
        assert!(parse_verifier_key(&other, COSIGNATURE_V1).is_err());
        // Keys whose base64 holds a `+` parse too.
        for seed in 0..64u8 {
            let pk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes();
            let vkey = verifier_key("w.example/x", COSIGNATURE_V1, &pk);
            assert_eq!(
                parse_verifier_key(&vkey, COSIGNATURE_V1).map(|(_, k)| k),
                Ok(pk),
                "{vkey}"
            );
        }
    }

    #[test]
    fn the_published_key_id_example_of_signed_note() {
        // c2sp.org/signed-note's example verifier key.
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let (name, key) = parse_verifier_key(vkey, ED25519).unwrap();
        assert_eq!(name, "PeterNeumann");
        assert_eq!(verifier_key(&name, ED25519, &key), vkey);
    }

    #[test]
    fn origins() {
        for ok in ["example.org/log", "govtune.invalid/folio/0a1b2c3d", "a.b/c/d_e-f"] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "govtune-testnet",
            "example.org",
            "example.org/",
            "example.org//x",
            "https://example.org/log",
            "example.org/a b",
            ".example.org/log",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signature_lines_parse_strictly() {
        let l = SignatureLine {
            name: "example.org/log".into(),
            blob: vec![1, 2, 3, 4, 5, 6],
        };
        let text = l.render();
        assert_eq!(SignatureLine::parse(text.trim_end_matches('\n')), Ok(l));
        assert!(SignatureLine::parse("- example.org/log AQIDBAUG").is_err());
        assert!(SignatureLine::parse("\u{2014} example.org/log AQID").is_err());
        assert!(split("a\n1\nroot\n\n").is_err());
        assert!(split("a\n1\nroot\n\n\u{2014} n AQIDBAUG").is_err());
    }
}
