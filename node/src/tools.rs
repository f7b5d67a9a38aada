//! The command-line tools that talk to a node from outside: `govtune
//! trace`, `govtune verify ...` and `govtune audit revocation`. Everything
//! they print about the ledger comes from [`testnet::verify::Verifier`],
//! which holds only the genesis file and checks every answer.

use std::path::Path;
use std::time::Duration;

use provenance::Digest;
use testnet::answer::TraceAnswer;
use testnet::verify::{Verdict, Verifier};
use testnet::Client;

/// Asks `node` to trace `output` after `prompt` in `campaign`.
pub fn ask_trace(
    node: &Client,
    campaign: &Digest,
    prompt: &str,
    output: &str,
    method: Option<&str>,
) -> Result<TraceAnswer, String> {
    let node = node.clone().with_timeout(Duration::from_secs(600));
    let mut req = serde_json::json!({ "campaign": campaign, "prompt": prompt, "output": output });
    if let Some(m) = method {
        req["method"] = serde_json::json!(m);
    }
    let a = node.post("/v1/trace", &req).map_err(|e| e.to_string())?;
    serde_json::from_value(a.body).map_err(|e| format!("the node's trace answer is malformed: {e}"))
}

/// The answer as a lineage: output → sources → examples → events → policy
/// → authorities, and the parameter blocks.
pub fn render_trace(a: &TraceAnswer) -> String {
    let mut s = format!(
        "trace of {:?} after {:?}\ncampaign {} · method {} · {} examples scored in {:.1} s · report {}\n\nsources (ranked):\n",
        a.output,
        a.prompt,
        a.campaign.short(),
        a.method,
        a.examples_scored,
        a.seconds,
        a.report_digest.short()
    );
    for src in &a.sources {
        s.push_str(&format!(
            "  {}. {} [{}] signed by {} · salient {:.4} · sum {:.4} over {} examples (log index {})\n",
            src.rank,
            src.title,
            src.source.short(),
            src.authority,
            src.salient,
            src.score,
            src.examples,
            src.manifest.index
        ));
        for x in &src.top_examples {
            s.push_str(&format!(
                "       example {} · step {} · event #{} · score {:.4}\n",
                x.index, x.step, x.event_seq, x.score
            ));
        }
    }
    s.push_str("events:\n");
    for e in &a.events {
        s.push_str(&format!(
            "  #{} (log index {}) · {} examples · score {:.4}\n",
            e.seq, e.entry.index, e.examples, e.score
        ));
    }
    s.push_str("policies:\n");
    for p in &a.policies {
        s.push_str(&format!("  {} (log index {})\n", p.digest.short(), p.index));
    }
    if let Some(b) = &a.base {
        s.push_str(&format!(
            "base model: campaign {} (log index {}), closed at index {}, {} sources\n",
            b.campaign.digest.short(),
            b.campaign.index,
            b.close.index,
            b.sources.len()
        ));
    }
    s.push_str("parameter blocks by share of the score:\n");
    for b in a.blocks.iter().take(6) {
        s.push_str(&format!("  block {} · {:.1}%\n", b.block, 100.0 * b.share));
    }
    s
}

/// Prints a verdict (text or JSON) and returns whether it passed.
pub fn report(v: &Verdict, json: bool) -> bool {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", v.render());
    }
    v.pass
}

/// A verifier of `node` from the genesis file.
pub fn verifier(genesis: &Path, node: &str) -> Result<Verifier, String> {
    Verifier::new(genesis, Client::new(node)).map_err(|e| e.to_string())
}

/// Parses a digest argument.
pub fn digest_arg(s: &str) -> Result<Digest, String> {
    Digest::from_hex(s.trim()).map_err(|e| format!("{s:?} is not a digest: {e}"))
}
