//! The rights-holder's tools: register a source from its text and terms
//! with a fresh secret salt, hand the operator a package, revoke.
//!
//! The salt makes a manifest's example hashes unguessable: without it,
//! anyone holding a candidate text could hash its windows and test them
//! against a trace. It is 32 bytes from the operating system's random
//! source, written (0600) beside the text before the manifest is sent, and
//! never derived from anything public. The operator needs text and salt to
//! train (its tooling recomputes the manifest's root from them); the
//! package carries both, with the manifest, and is a secret file too.

use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::Deserialize;

use provenance::{AuthorityId, Canonical, DataSourceManifest, Digest, Revocation, RightsBasis, Timestamp};

use crate::RolesError;

pub use tuner::package::{Package, SourcePackage, PACKAGE_FORMAT};

/// A rights-holder's terms file (TOML; paths relative to it, times RFC 3339).
///
/// ```toml
/// authority = "globe-press"
/// title = "As You Like It"
/// text = "as_you_like_it.txt"
/// example_bytes = 65            # one example: the operator's context + 1
/// license = "CC0-1.0"
/// purposes = ["research"]
/// data_class = "literary"
/// rights_basis = "public-domain" # owner, licensee, consent, statutory
/// not_before = "2026-01-01T00:00:00Z"
/// not_after = "2031-01-01T00:00:00Z"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsFile {
    /// The data-source authority (the node's).
    pub authority: String,
    /// Title.
    pub title: String,
    /// The text file.
    pub text: PathBuf,
    /// Bytes per example: the text is cut into windows of this length.
    pub example_bytes: u32,
    /// Keep at most this many bytes of the text.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// SPDX licence.
    pub license: String,
    /// Purposes the source may be used for.
    pub purposes: Vec<String>,
    /// Data class (the policy maps it to a depth profile).
    pub data_class: String,
    /// On what basis the authority licenses it.
    #[serde(default = "public_domain")]
    pub rights_basis: RightsBasis,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
}

fn public_domain() -> RightsBasis {
    RightsBasis::PublicDomain
}

/// Milliseconds since the Unix epoch of an RFC 3339 time.
pub fn rfc3339_ms(text: &str) -> Result<u64, RolesError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| RolesError::Config(format!("{text:?} is not an RFC 3339 time: {e}")))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| RolesError::Config(format!("{text:?} is before 1970")))
}

impl TermsFile {
    /// Reads a terms file; its text path is resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, RolesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RolesError::io(path, e))?;
        let mut t: TermsFile =
            toml::from_str(&text).map_err(|e| RolesError::Config(format!("{}: {e}", path.display())))?;
        if t.text.is_relative() {
            t.text = path.parent().unwrap_or(Path::new(".")).join(&t.text);
        }
        Ok(t)
    }

    /// The manifest of `text` under these terms with `salt` (the tuner's
    /// `manifest_for`, which the operator's tooling recomputes it with).
    pub fn manifest(&self, text: &[u8], salt: &[u8; 32]) -> Result<DataSourceManifest, RolesError> {
        let terms = tuner::data::SourceTerms {
            authority: self.authority.clone(),
            title: self.title.clone(),
            license: self.license.clone(),
            purposes: self.purposes.clone(),
            data_class: self.data_class.clone(),
            rights_basis: self.rights_basis,
            not_before: rfc3339_ms(&self.not_before)?,
            not_after: rfc3339_ms(&self.not_after)?,
        };
        let m = tuner::data::manifest_for(text, self.example_bytes as usize, salt, &terms)?;
        m.check()
            .map_err(|e| RolesError::Config(format!("source {:?}: {e}", self.title)))?;
        Ok(m)
    }
}

/// Reads a package file (refusing one readable by others) and checks
/// that its text and salt give its manifest's example root.
pub fn load_package(path: &Path) -> Result<Package, RolesError> {
    let text = genesis::read_secret(path).map_err(|e| RolesError::Config(e.to_string()))?;
    Package::decode(&text).map_err(|e| RolesError::Config(format!("{}: {e}", path.display())))
}

/// A registration prepared on disk: the salt and the package are written
/// (0600, never overwritten) before the manifest leaves the machine.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The manifest to submit.
    pub manifest: DataSourceManifest,
    /// Its source id.
    pub id: Digest,
    /// The salt file.
    pub salt_file: PathBuf,
    /// The package file.
    pub package_file: PathBuf,
}

/// The salt and package files of a text: `<text>.salt`, `<text>.package`.
pub fn files_of(text: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s = text.as_os_str().to_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".salt"), with(".package"))
}

/// Reads the text, draws a fresh salt, builds the manifest and writes the
/// salt file and the operator's package beside the text. Refuses when
/// either file exists (a registration of this text is already on disk:
/// move its files away to register the text again, under a new salt).
pub fn prepare(terms: &TermsFile) -> Result<Prepared, RolesError> {
    let mut text = std::fs::read(&terms.text).map_err(|e| RolesError::io(&terms.text, e))?;
    if let Some(max) = terms.max_bytes {
        text.truncate(max);
    }
    let (salt_file, package_file) = files_of(&terms.text);
    for f in [&salt_file, &package_file] {
        if f.exists() {
            return Err(RolesError::Config(format!(
                "{} exists: this text was registered already (move its .salt and .package away to register it again under a new salt)",
                f.display()
            )));
        }
    }
    let mut salt = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let manifest = terms.manifest(&text, &salt)?;
    let package_text = Package::encode(&manifest, &text, &salt)?;
    let secret = |e: genesis::Error| RolesError::Config(e.to_string());
    genesis::write_new(&salt_file, &salt, 0o600).map_err(secret)?;
    genesis::write_new(&package_file, package_text.as_bytes(), 0o600).map_err(secret)?;
    Ok(Prepared {
        id: manifest.source_id(),
        manifest,
        salt_file,
        package_file,
    })
}

/// A revocation of `source` by `authority`, asked now.
pub fn revocation(authority: AuthorityId, source: Digest, reason: &str, now_ms: u64) -> Revocation {
    Revocation {
        version: 1,
        authority,
        source,
        reason: reason.to_string(),
        requested: Timestamp(now_ms),
    }
}
