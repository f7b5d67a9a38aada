//! A rights-holder's source package (`govtune-source-package/v1`, a secret
//! JSON file): the manifest, the text and the salt of its example hashes.
//! The operator trains from it; the rights-holder's own node replays its
//! examples from it when an audit ticket selects a record.

use base64::Engine;
use serde::{Deserialize, Serialize};

use provenance::{DataSourceManifest, SourceExamples};

use crate::error::{Result, TunerError};

/// Format tag of a source package.
pub const PACKAGE_FORMAT: &str = "govtune-source-package/v1";

/// A package file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePackage {
    /// Always [`PACKAGE_FORMAT`].
    pub format: String,
    /// The manifest's canonical bytes (hex).
    pub manifest: provenance::Bytes,
    /// The salt (hex).
    pub salt: provenance::Bytes,
    /// The text (base64).
    pub text: String,
}

/// A package read back: manifest, text and salt, checked against each
/// other (the salt and text give the manifest's root).
#[derive(Debug, Clone)]
pub struct Package {
    /// The manifest.
    pub manifest: DataSourceManifest,
    /// The text.
    pub text: Vec<u8>,
    /// The salt.
    pub salt: [u8; 32],
}

impl Package {
    /// The package file's text for `manifest`, `text` and `salt`.
    pub fn encode(manifest: &DataSourceManifest, text: &[u8], salt: &[u8; 32]) -> Result<String> {
        use provenance::Canonical;
        let p = SourcePackage {
            format: PACKAGE_FORMAT.into(),
            manifest: provenance::Bytes(manifest.encode()),
            salt: provenance::Bytes(salt.to_vec()),
            text: base64::engine::general_purpose::STANDARD.encode(text),
        };
        serde_json::to_string(&p).map_err(|e| bad(e.to_string()))
    }

    /// Decodes a package file's text and checks that its text and salt
    /// give its manifest's example root, count and length.
    pub fn decode(json: &str) -> Result<Self> {
        let p = Self::parse(json)?;
        let examples = SourceExamples::build(&p.text, &p.manifest.segmentation, &p.salt)
            .map_err(|e| bad(e.to_string()))?;
        if examples.root() != p.manifest.example_root
            || examples.len() != p.manifest.example_count
            || p.text.len() as u64 != p.manifest.content_bytes
        {
            return Err(bad(
                "its text and salt do not give the manifest's example root, count or length".into(),
            ));
        }
        Ok(p)
    }

    /// Decodes a package file's text without checking its text against its
    /// manifest (for a caller that cuts the text into examples anyway and
    /// checks them then: `crate::data::PreparedSource::new`).
    pub fn parse(json: &str) -> Result<Self> {
        let p: SourcePackage = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if p.format != PACKAGE_FORMAT {
            return Err(bad(format!("format {:?}, expected {PACKAGE_FORMAT:?}", p.format)));
        }
        let manifest: DataSourceManifest =
            provenance::decode(p.manifest.0.as_slice()).map_err(|e| bad(e.to_string()))?;
        let salt: [u8; 32] = p
            .salt
            .0
            .as_slice()
            .try_into()
            .map_err(|_| bad("the salt is not 32 bytes".into()))?;
        let text = base64::engine::general_purpose::STANDARD
            .decode(p.text.as_bytes())
            .map_err(|e| bad(format!("text: {e}")))?;
        Ok(Self { manifest, text, salt })
    }
}

fn bad(reason: String) -> TunerError {
    TunerError::Config(format!("source package: {reason}"))
}
