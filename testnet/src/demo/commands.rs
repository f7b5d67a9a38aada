//! The commands `govtune demo --keep-running` prints: each checks the
//! demo's outcome against its live testnet, written as a user would paste
//! them into a POSIX shell.

use std::path::Path;

use provenance::Digest;

use super::DemoTrace;

/// The binary as a user would type it: `govtune` when that name on `PATH`
/// is this very file, else its path.
fn command_name(binary: &Path) -> String {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("govtune"))
            .find(|c| c.is_file())
    });
    let same = |a: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(binary)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match on_path {
        Some(p) if same(&p) => "govtune".into(),
        _ => quote(&binary.display().to_string()),
    }
}

/// `s` as one POSIX shell word.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What the follow-up commands are about.
pub(super) struct FollowUp<'a> {
    /// The `govtune` binary.
    pub binary: &'a Path,
    /// The demo's folder.
    pub dir: &'a Path,
    /// The testnet's folder.
    pub net: &'a Path,
    /// The genesis file.
    pub genesis: &'a Path,
    /// A data-source node's API address.
    pub node: &'a str,
    /// A checkpoint height from before the campaigns.
    pub first: u64,
    /// The fine-tune, its policy and its model file.
    pub campaign: &'a Digest,
    pub policy: &'a Digest,
    pub model: &'a Path,
    /// A source the fine-tune used, and the one revoked after it.
    pub source: &'a Digest,
    pub revoked: &'a Digest,
    /// An output to trace.
    pub trace: &'a DemoTrace,
}

/// The commands `--keep-running` prints: each checks the demo's outcome
/// against its live testnet, in an order that runs as written (the trace
/// writes the answer the next command verifies), the last stopping it.
pub(super) fn follow_up_commands(f: &FollowUp) -> Vec<String> {
    let bin = command_name(f.binary);
    let q = |p: &Path| quote(&p.display().to_string());
    let light = format!("{bin} verify --genesis {} --node {}", q(f.genesis), f.node);
    let answer = f.dir.join("trace.json");
    vec![
        format!("{bin} testnet status --dir {}", q(f.net)),
        format!("{light} checkpoint"),
        format!("{light} consistency --first {}", f.first),
        format!(
            "{light} policy --campaign {} --approved {}",
            f.campaign.to_hex(),
            f.policy.to_hex()
        ),
        format!("{light} source --id {}", f.source.to_hex()),
        format!(
            "{light} model --campaign {} --weights {}",
            f.campaign.to_hex(),
            q(f.model)
        ),
        format!(
            "{bin} trace --node {} --campaign {} --prompt {} --output {} --genesis {} --out {}",
            f.node,
            f.campaign.to_hex(),
            quote(&f.trace.prompt),
            quote(&f.trace.output),
            q(f.genesis),
            q(&answer)
        ),
        format!("{light} trace --answer {}", q(&answer)),
        format!(
            "{bin} audit revocation --genesis {} --node {} --source {}",
            q(f.genesis),
            f.node,
            f.revoked.to_hex()
        ),
        format!("{bin} testnet down --dir {}", q(f.net)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every quoted word reaches a program as itself through `sh -c`.
    #[test]
    fn quoted_words_survive_the_shell() {
        for word in [
            "plain-word_1.txt",
            "",
            "my locker password is ",
            "it's",
            "a'b'c",
            "$HOME `x` \\ \"q\" *",
            "line\nbreak",
        ] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", quote(word))])
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{}", quote(word));
        }
    }
}
