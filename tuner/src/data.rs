//! Data sources, examples and the data order.
//!
//! An example is a fixed-length window of a signed source (the manifest's
//! [`Segmentation::Window`], `context + 1` bytes), carrying its salted hash
//! and its inclusion proof in the source's Merkle root.

use provenance::crypto::{CoSignature, CoSigner};
use provenance::genesis::{deal, ConsortiumDescription, NodeSigners};
use provenance::order::{ConsideredSource, Order, OrderSeed, OrderSpan};
use provenance::{
    AuthorityId, DataClass, DataSourceManifest, Digest, KeyRing, License, Purpose, RightsBasis, Segmentation,
    SourceExamples, Timestamp,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{Result, TunerError};

/// A source as the operator holds it: the signed manifest, the text and
/// the salt the rights-holder shared.
#[derive(Debug, Clone)]
pub struct SignedSource {
    /// The manifest.
    pub manifest: DataSourceManifest,
    /// The data-source authority's signature on it.
    pub signature: CoSignature,
    /// The text.
    pub text: Vec<u8>,
    /// The example salt.
    pub salt: [u8; 32],
}

/// A source cut into examples, checked against its manifest.
#[derive(Debug, Clone)]
pub struct PreparedSource {
    /// The signed source.
    pub signed: SignedSource,
    /// Its examples and tree.
    pub examples: SourceExamples,
    /// Its id (manifest digest).
    pub id: Digest,
}

impl PreparedSource {
    /// Cuts the text and checks root, count and length against the
    /// manifest, and that windows are `window` bytes long.
    pub fn new(signed: SignedSource, window: usize) -> Result<Self> {
        let m = &signed.manifest;
        let err = |reason: String| TunerError::Source {
            title: m.title.clone(),
            reason,
        };
        match m.segmentation {
            Segmentation::Window { length, .. } if length as usize == window => {}
            _ => return Err(err(format!("segmentation must be windows of {window} bytes"))),
        }
        let examples = SourceExamples::build(&signed.text, &m.segmentation, &signed.salt)
            .map_err(|e| err(e.to_string()))?;
        if examples.root() != m.example_root
            || examples.len() != m.example_count
            || signed.text.len() as u64 != m.content_bytes
        {
            return Err(err(
                "text and salt do not match the manifest's root, count or length".into(),
            ));
        }
        let id = m.source_id();
        Ok(Self { signed, examples, id })
    }

    /// The bytes of example `index`.
    pub fn window(&self, index: u64) -> &[u8] {
        let r = self.examples.range(index).unwrap_or(0..0);
        &self.signed.text[r.start as usize..r.end as usize]
    }
}

/// One example of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExampleId {
    /// Source position in the campaign's source list.
    pub source: usize,
    /// Example index.
    pub index: u64,
}

/// The considered set of `sources`, in their order: what a recipe
/// commits ([`provenance::order`]).
pub fn considered(sources: &[SignedSource]) -> Vec<ConsideredSource> {
    sources
        .iter()
        .map(|s| ConsideredSource {
            source: s.manifest.source_id(),
            examples: s.manifest.example_count,
        })
        .collect()
}

/// The order seed of a number the operator picks: a campaign no
/// consortium witnesses (pretraining into a file, benchmarks).
pub fn seeded_order(seed: u64) -> OrderSeed {
    OrderSeed(provenance::digest::tagged_hash_parts(
        provenance::ObjectKind::Blob,
        &[b"govtune-seeded-order", &seed.to_be_bytes()],
    ))
}

/// The data order read in batches: the campaign's [`Order`] over its
/// considered sources (an [`ExampleId`]'s source is its position there).
/// Its cursor is *not* rolled back with a refused step (a refused example
/// is consumed, not retried forever).
#[derive(Debug, Clone)]
pub struct Schedule {
    order: Order,
    /// The next position to draw.
    pub position: u64,
}

impl Schedule {
    /// The schedule over `sources` under `seed`.
    pub fn new(sources: &[PreparedSource], seed: OrderSeed) -> Result<Self> {
        let considered: Vec<ConsideredSource> = sources
            .iter()
            .map(|p| ConsideredSource {
                source: p.id,
                examples: p.examples.len(),
            })
            .collect();
        let order = Order::new(&considered, seed).map_err(|e| TunerError::Config(e.to_string()))?;
        Ok(Self { order, position: 0 })
    }

    /// A schedule whose seed is a number the operator picks (benchmarks):
    /// reproducible, not witnessed.
    pub fn seeded(sources: &[PreparedSource], seed: u64) -> Result<Self> {
        Self::new(sources, seeded_order(seed))
    }

    /// Number of examples per epoch.
    pub fn epoch_len(&self) -> usize {
        self.order.epoch_len() as usize
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.position / self.order.epoch_len()
    }

    /// The next batch of at most `n` examples of the current epoch, the
    /// span of positions it takes, and whether it ends the epoch.
    pub fn next_batch(&mut self, n: usize) -> (Vec<ExampleId>, OrderSpan, bool) {
        let len = self.order.epoch_len();
        let start = self.position;
        let epoch_end = (start / len + 1) * len;
        let end = (start + n.max(1) as u64).min(epoch_end);
        let batch = (start..end)
            .map(|p| {
                let (source, index) = self.order.at(p);
                ExampleId { source, index }
            })
            .collect();
        self.position = end;
        (batch, OrderSpan { start, end }, end == epoch_end)
    }
}

/// Overwrites the canary into windows `every`-th window of `text` (at
/// `offset` bytes into the window), returning the window indices.
pub fn plant_canary(text: &mut [u8], window: usize, canary: &[u8], every: usize, offset: usize) -> Vec<u64> {
    let mut planted = Vec::new();
    if offset + canary.len() > window || every == 0 {
        return planted;
    }
    let mut w = 0;
    while (w + 1) * window <= text.len() {
        if w % every == 0 {
            let s = w * window + offset;
            text[s..s + canary.len()].copy_from_slice(canary);
            planted.push(w as u64);
        }
        w += 1;
    }
    planted
}

/// A demo consortium: the default 4-authority testnet dealt from a seed,
/// with its signers. Real deployments take the keyring from genesis and
/// signed manifests from the rights-holders' nodes instead.
pub struct DemoConsortium {
    /// The keyring.
    pub keyring: KeyRing,
    /// Every node's signers.
    pub signers: Vec<NodeSigners>,
}

impl DemoConsortium {
    /// Deals the local testnet from `seed`.
    pub fn deal(seed: u64, created: Timestamp) -> Result<Self> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let dealt = deal(
            &ConsortiumDescription::local_testnet(7100, 8100),
            created,
            &mut rng,
        )
        .map_err(|e| TunerError::Config(format!("dealing the demo consortium: {e}")))?;
        let signers = dealt.signers().map_err(|e| TunerError::Config(e.to_string()))?;
        Ok(Self {
            keyring: dealt.keyring,
            signers,
        })
    }

    fn signer(&self, id: &AuthorityId) -> Result<&NodeSigners> {
        self.signers
            .iter()
            .find(|s| s.authority.authority() == id)
            .ok_or_else(|| TunerError::Config(format!("authority {id} is not in the demo consortium")))
    }

    /// Signs a manifest as its data-source authority, under the scheme
    /// the authority declares in genesis.
    pub fn sign_manifest(&self, m: &DataSourceManifest) -> Result<CoSignature> {
        let req = provenance::admission::manifest_sign_request(m);
        let scheme = self
            .keyring
            .authority(&m.authority)
            .map_err(|e| TunerError::Config(e.to_string()))?
            .scheme;
        let mut co = CoSigner::new(&self.keyring, scheme, vec![req.clone()])
            .map_err(|e| TunerError::Config(e.to_string()))?;
        let sig = self
            .signer(&m.authority)?
            .authority
            .sign(scheme, &req.message)
            .map_err(|e| TunerError::Config(e.to_string()))?;
        co.add(sig).map_err(|e| TunerError::Config(e.to_string()))?;
        co.finish().map_err(|e| TunerError::Config(e.to_string()))
    }
}

fn public_domain() -> RightsBasis {
    RightsBasis::PublicDomain
}

/// What a rights-holder declares about a text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SourceTerms {
    /// Authority id.
    pub authority: String,
    /// Title.
    pub title: String,
    /// SPDX license.
    pub license: String,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Data class.
    pub data_class: String,
    /// On what basis the authority licenses it (default: public domain).
    #[serde(default = "public_domain")]
    pub rights_basis: RightsBasis,
    /// Validity start (ms).
    pub not_before: u64,
    /// Validity end (ms).
    pub not_after: u64,
}

/// Builds a manifest for `text` cut into non-overlapping windows.
pub fn manifest_for(
    text: &[u8],
    window: usize,
    salt: &[u8; 32],
    terms: &SourceTerms,
) -> Result<DataSourceManifest> {
    let cfg = |e: String| TunerError::Config(format!("source {}: {e}", terms.title));
    let seg = Segmentation::Window {
        length: window as u32,
        stride: window as u32,
    };
    let ex = SourceExamples::build(text, &seg, salt).map_err(|e| cfg(e.to_string()))?;
    Ok(DataSourceManifest {
        version: 1,
        authority: AuthorityId::new(terms.authority.clone()).map_err(|e| cfg(e.to_string()))?,
        title: terms.title.clone(),
        segmentation: seg,
        example_root: ex.root(),
        example_count: ex.len(),
        content_bytes: text.len() as u64,
        license: License::new(terms.license.clone()).map_err(|e| cfg(e.to_string()))?,
        rights_basis: terms.rights_basis,
        purposes: terms
            .purposes
            .iter()
            .map(|p| Purpose::new(p.clone()).map_err(|e| cfg(e.to_string())))
            .collect::<Result<_>>()?,
        data_class: DataClass::new(terms.data_class.clone()).map_err(|e| cfg(e.to_string()))?,
        not_before: Timestamp(terms.not_before),
        not_after: Timestamp(terms.not_after),
    })
}
