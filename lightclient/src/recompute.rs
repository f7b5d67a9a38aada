//! What a verifier can only check by computing: the final model rebuilt
//! from the base and every delta blob, and a trace's scores recomputed bit
//! for bit. Needs the tuner (feature `recompute`); without it each check
//! answers [`VerifyError::NotBuilt`].

use provenance::api::TraceAnswer;
use provenance::record::CampaignRecord;

use crate::client::Client;
use crate::light::VerifyError;
use crate::verify::Verdict;

#[cfg(feature = "recompute")]
mod built {
    use provenance::Digest;
    use tuner::record::PreparedTrace;

    use super::*;

    fn fetcher(node: &Client) -> impl FnMut(&Digest) -> tuner::Result<Vec<u8>> + '_ {
        move |d: &Digest| {
            node.get_bytes(&format!("/v1/blobs/{}", d.to_hex()))
                .map_err(|e| tuner::TunerError::Sink(e.to_string()))
        }
    }

    /// The weights file (an adapter snapshot, safetensors) is exactly the
    /// campaign's base plus its recorded deltas.
    pub fn check_model(
        node: &Client,
        rec: &CampaignRecord,
        weights: &[u8],
        v: &mut Verdict,
    ) -> Result<(), VerifyError> {
        let mut fetch = fetcher(node);
        let rebuilt =
            PreparedTrace::rebuild_model(rec, &mut fetch).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        v.notes.push(format!(
            "rebuilt the final model from the base and {} delta blobs; every event's model-state digest and the close's final state ({}) match",
            rec.events().count(),
            rec.close.final_state.short()
        ));
        match tuner::lora::Adapters::from_snapshot(rebuilt.layout.clone(), weights) {
            Err(e) => v.violation(format!(
                "the weights file is not an adapter snapshot of this campaign: {e}"
            )),
            Ok(a) => {
                let found = a.state_digest(&rebuilt.base_digest);
                if found != rec.close.final_state {
                    v.violation(format!(
                        "the weights file's model state is {}, the campaign's final state is {}",
                        found.short(),
                        rec.close.final_state.short()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Recomputes the answer's scores from the campaign's blobs and
    /// compares them with the node's.
    pub fn check_trace(
        node: &Client,
        rec: &CampaignRecord,
        a: &TraceAnswer,
        v: &mut Verdict,
    ) -> Result<(), VerifyError> {
        let method = tuner::score::Method::by_name(&a.method)
            .ok_or_else(|| VerifyError::Malformed(format!("unknown method {}", a.method)))?;
        let mut fetch = fetcher(node);
        let prep = PreparedTrace::build(rec, &mut fetch).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        let report = prep
            .trace(a.prompt.as_bytes(), a.output.as_bytes(), method)
            .map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        if report.digest() != a.report_digest {
            v.violation(format!(
                "recomputed scores differ: report digest {} against the node's {}",
                report.digest().short(),
                a.report_digest.short()
            ));
        } else {
            v.notes.push(format!(
                "scores recomputed from {} blob bytes: bit-identical (report {})",
                prep.blob_bytes,
                report.digest().short()
            ));
        }
        let mine: Vec<Digest> = report.sources_by_salient().iter().map(|s| s.source).collect();
        let theirs: Vec<Digest> = a.sources.iter().map(|s| s.source).collect();
        if mine != theirs {
            v.violation("the node's source ranking is not the recomputed one".into());
        }
        Ok(())
    }
}

#[cfg(feature = "recompute")]
pub use built::{check_model, check_trace};

/// Without the tuner: the model cannot be rebuilt here.
#[cfg(not(feature = "recompute"))]
pub fn check_model(_: &Client, _: &CampaignRecord, _: &[u8], _: &mut Verdict) -> Result<(), VerifyError> {
    Err(VerifyError::NotBuilt("rebuilding a model"))
}

/// Without the tuner: scores cannot be recomputed here.
#[cfg(not(feature = "recompute"))]
pub fn check_trace(
    _: &Client,
    _: &CampaignRecord,
    _: &TraceAnswer,
    _: &mut Verdict,
) -> Result<(), VerifyError> {
    Err(VerifyError::NotBuilt("recomputing trace scores"))
}
