//! The role commands each authority runs from its own machine against its
//! own node: `source register|revoke`, `policy publish|supersede`, the
//! operator's `campaign run --node`, and `node init|status`.
//!
//! Every role command takes `--node URL --token-file FILE --genesis FILE`
//! (or `GOVTUNE_NODE`, `GOVTUNE_TOKEN_FILE`, `GOVTUNE_GENESIS`); over https
//! it accepts only the certificate genesis pins. Exit status: 0 the entry
//! committed, 1 the consortium refused it (the reason is printed), 2 it
//! could not be submitted or its fate is unknown (bad input, a node
//! unreachable or of another consortium).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use lightclient::{Client, LightClient};
use provenance::{Canonical, Digest};
use roles::verdict::{settle, Settled};

use crate::Failure;

/// How long a role command waits for its entry's verdict.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(180);

/// The nodes a role command talks to, as their authority.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// The authority's own node (`https://host:port`). An authority of
    /// several nodes gives t+1 of them (repeat `--node`, each with its
    /// `--token-file`, in the same order): each signs its share of what it
    /// is given.
    #[arg(long, env = "GOVTUNE_NODE", required = true)]
    pub node: Vec<String>,
    /// The node's admin token file (0600); one per `--node`.
    #[arg(long, env = "GOVTUNE_TOKEN_FILE", required = true)]
    pub token_file: Vec<PathBuf>,
    /// The consortium's genesis file.
    #[arg(long, env = "GOVTUNE_GENESIS")]
    pub genesis: PathBuf,
}

fn unchecked(e: impl std::fmt::Display) -> Failure {
    Failure::unchecked(e.to_string())
}

/// A client of each node given, holding its admin token, accepting only
/// the certificate genesis pins, each checked to run this genesis; all of
/// one authority, and enough of them to sign for it (t+1).
pub fn connect_all(a: &NodeArgs) -> Result<(Vec<Client>, provenance::KeyRing), Failure> {
    connect_nodes(a, true)
}

fn connect_nodes(a: &NodeArgs, signing: bool) -> Result<(Vec<Client>, provenance::KeyRing), Failure> {
    if a.node.len() != a.token_file.len() {
        return Err(Failure::unchecked(format!(
            "{} --node but {} --token-file: give one token file per node, in the same order",
            a.node.len(),
            a.token_file.len()
        )));
    }
    let (g, keyring) = genesis::load_genesis(&a.genesis).map_err(unchecked)?;
    let light = LightClient::from_genesis_file(&a.genesis).map_err(unchecked)?;
    let mut clients = Vec::new();
    let mut authority = None;
    let mut seen = std::collections::BTreeSet::new();
    for (node, token_file) in a.node.iter().zip(&a.token_file) {
        if !seen.insert(node.trim_end_matches('/')) {
            return Err(Failure::unchecked(format!(
                "{node} is given twice: each of an authority's nodes signs once"
            )));
        }
        let token = genesis::load_admin_token(token_file).map_err(unchecked)?;
        let client = light.trust(Client::new(node)).with_token(&token);
        let h = client.health().map_err(unchecked)?;
        if h.genesis != g.digest() {
            return Err(Failure::unchecked(format!(
                "{node} runs genesis {}, not this one ({})",
                h.genesis,
                g.digest()
            )));
        }
        match &authority {
            None => authority = Some(h.authority.clone()),
            Some(first) if *first != h.authority => {
                return Err(Failure::unchecked(format!(
                    "{node} is a node of {}, not of {first}: give the nodes of one authority",
                    h.authority
                )))
            }
            Some(_) => {}
        }
        clients.push(client);
    }
    if let Some(id) = &authority {
        let record = g.authorities.iter().find(|r| &r.id == id).ok_or_else(|| {
            Failure::unchecked(format!("the nodes run for {id}, which genesis does not name"))
        })?;
        let need = usize::from(record.bls.threshold) + 1;
        if !signing && need > 1 {
            return Err(Failure::unchecked(format!(
                "{} signs with {need} of its nodes; `campaign run` drives one node, so an operator of several \
                 signing nodes cannot run a campaign with it yet",
                record.id
            )));
        }
        if clients.len() < need {
            return Err(Failure::unchecked(format!(
                "{} signs with {need} of its {} nodes: give {need} --node (each with its --token-file), not {}",
                record.id,
                g.nodes_of(&record.id).count(),
                clients.len()
            )));
        }
    }
    Ok((clients, keyring))
}

/// A client of the one node given, of an authority that signs with one
/// node (see [`connect_all`]).
pub fn connect(a: &NodeArgs) -> Result<(Client, provenance::KeyRing), Failure> {
    let (mut clients, keyring) = connect_nodes(a, false)?;
    if clients.is_empty() {
        return Err(Failure::unchecked("no --node given".into()));
    }
    Ok((clients.swap_remove(0), keyring))
}

/// Submits `body` at `path` to each node and waits for the consortium's
/// verdict (asked of the first).
fn submit_and_settle<B: serde::Serialize>(
    nodes: &[Client],
    path: &str,
    body: &B,
    what: &str,
) -> Result<(), Failure> {
    let Some(node) = nodes.first() else {
        return Err(Failure::unchecked("no --node given".into()));
    };
    let mut digest = None;
    for n in nodes {
        let d = n.submit(path, body).map_err(unchecked)?.digest;
        if digest.is_some_and(|first| first != d) {
            return Err(Failure::unchecked(format!(
                "{} took it as another entry ({d})",
                n.base()
            )));
        }
        digest = Some(d);
    }
    let digest = digest.unwrap_or(Digest::ZERO);
    println!("{what}: entry {digest} submitted");
    match settle(node, &digest, VERDICT_TIMEOUT).map_err(unchecked)? {
        Settled::Committed(index) => {
            println!("{what}: committed at log index {index}");
            Ok(())
        }
        Settled::Refused(reason) => Err(Failure::violated(format!("{what} not committed: {reason}"))),
    }
}

/// A rights-holder's commands.
#[derive(Subcommand, Debug)]
pub enum SourceCommand {
    /// Register a source: build its manifest from the text and terms with a
    /// fresh secret salt (written 0600 beside the text as TEXT.salt), write
    /// the operator's package (TEXT.package, 0600: text and salt, handed
    /// over privately), submit the manifest and wait until it commits.
    #[command(
        after_help = "Example:\n  govtune source register --node https://203.0.113.10:8100 \\\n    --token-file admin.token --genesis genesis.json --terms hamlet.toml"
    )]
    Register {
        #[command(flatten)]
        node: NodeArgs,
        /// The terms file (TOML; see `docs/multi-machine.md`).
        #[arg(long)]
        terms: PathBuf,
    },
    /// Revoke a registered source of this node's authority.
    #[command(
        after_help = "Example:\n  govtune source revoke --node https://203.0.113.10:8100 \\\n    --token-file admin.token --genesis genesis.json \\\n    --source 3f2a...e9 --reason \"licence withdrawn\""
    )]
    Revoke {
        #[command(flatten)]
        node: NodeArgs,
        /// The source id (its manifest's digest, hex).
        #[arg(long)]
        source: String,
        /// Why, in words (recorded on the ledger).
        #[arg(long)]
        reason: String,
    },
}

/// Governance's commands.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Publish the first policy (policy_version 1).
    #[command(
        after_help = "Example:\n  govtune policy publish --node https://203.0.113.12:8100 \\\n    --token-file admin.token --genesis genesis.json --policy policy.toml"
    )]
    Publish {
        #[command(flatten)]
        node: NodeArgs,
        /// The policy file (TOML).
        #[arg(long)]
        policy: PathBuf,
    },
    /// Publish a policy that supersedes a committed one (open campaigns
    /// under the old one close at their last committed step).
    #[command(
        after_help = "Example:\n  govtune policy supersede --node https://203.0.113.12:8100 \\\n    --token-file admin.token --genesis genesis.json \\\n    --policy policy-v2.toml --supersedes 9c1d...07"
    )]
    Supersede {
        #[command(flatten)]
        node: NodeArgs,
        /// The new policy file (TOML, policy_version 2 or more).
        #[arg(long)]
        policy: PathBuf,
        /// The digest of the policy it supersedes.
        #[arg(long)]
        supersedes: String,
    },
}

fn digest(text: &str) -> Result<Digest, Failure> {
    Digest::from_hex(text.trim()).map_err(|e| Failure::unchecked(format!("{text:?} is not a digest: {e}")))
}

/// Runs a rights-holder's command.
pub fn run_source(command: SourceCommand) -> Result<(), Failure> {
    match command {
        SourceCommand::Register { node, terms } => {
            let terms = roles::source::TermsFile::load(&terms).map_err(unchecked)?;
            let (clients, _) = connect_all(&node)?;
            let p = roles::source::prepare(&terms).map_err(unchecked)?;
            println!("source {} ({:?})", p.id, p.manifest.title);
            println!(
                "  {} examples of {} bytes, example root {}",
                p.manifest.example_count, terms.example_bytes, p.manifest.example_root
            );
            println!("  salt (secret, 0600): {}", p.salt_file.display());
            println!(
                "  package for the operator (secret, 0600): {}",
                p.package_file.display()
            );
            submit_and_settle(&clients, "/v1/sources", &p.manifest, "manifest")
        }
        SourceCommand::Revoke { node, source, reason } => {
            let id = digest(&source)?;
            let (clients, _) = connect_all(&node)?;
            let answer = clients
                .first()
                .ok_or_else(|| Failure::unchecked("no --node given".into()))?
                .source(&id)
                .map_err(unchecked)?;
            let r =
                roles::source::revocation(answer.manifest.authority.clone(), id, &reason, roles::now_ms());
            submit_and_settle(&clients, "/v1/revocations", &r, "revocation")
        }
    }
}

/// Runs a governance command.
pub fn run_policy(command: PolicyCommand) -> Result<(), Failure> {
    let (node, policy) = match command {
        PolicyCommand::Publish { node, policy } => {
            let p = roles::policy::load(&policy).map_err(unchecked)?;
            (node, roles::policy::first(p).map_err(unchecked)?)
        }
        PolicyCommand::Supersede {
            node,
            policy,
            supersedes,
        } => {
            let old = digest(&supersedes)?;
            let p = roles::policy::load(&policy).map_err(unchecked)?;
            (node, roles::policy::superseding(p, old).map_err(unchecked)?)
        }
    };
    let (clients, _) = connect_all(&node)?;
    println!("policy {} (version {})", policy.digest(), policy.policy_version);
    submit_and_settle(&clients, "/v1/policies", &policy, "policy")
}

/// The operator's campaign against its own node from the rights-holders'
/// packages; writes the fine-tuned model to `model_out` when it finishes.
pub fn run_campaign(
    node: &NodeArgs,
    config: &Path,
    packages: &[PathBuf],
    model_out: &Path,
) -> Result<(), Failure> {
    let file = roles::operator::OperatorCampaign::load(config).map_err(unchecked)?;
    let packages = packages
        .iter()
        .map(|p| roles::source::load_package(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unchecked)?;
    let (client, keyring) = connect(node)?;
    let mut bar = roles::progress::BarProgress::new(file.settings.max_steps);
    let out = roles::operator::run(client.clone(), keyring, &file, packages, &mut bar);
    bar.finish();
    let out = out.map_err(unchecked)?;
    crate::print_outcome(&out);
    if out.stop == tuner::campaign::Stop::Finished {
        if let Some(snap) = out.snapshots.last() {
            let bytes = client
                .get_bytes(&format!("/v1/blobs/{}", snap.blob.to_hex()))
                .map_err(unchecked)?;
            std::fs::write(model_out, &bytes)
                .map_err(|e| unchecked(format!("{}: {e}", model_out.display())))?;
            println!("fine-tuned model written to {}", model_out.display());
        }
    }
    crate::stop_verdict(&out.stop)
}

/// A node's commands besides running it.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Write a commented configuration for one node of genesis, beside
    /// the key files the ceremony gave it.
    #[command(
        after_help = "Example (in the folder holding node.key, admin.token, api.crt, api.key):\n  govtune node init --genesis genesis.json --name globe-1 --out node.toml"
    )]
    Init {
        /// The genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The node's name in genesis.
        #[arg(long)]
        name: String,
        /// The configuration file to write (never overwritten).
        #[arg(long, default_value = "node.toml")]
        out: PathBuf,
    },
    /// A node's health, checked to run this genesis; with `--wait`, waits
    /// until it answers.
    #[command(
        after_help = "Example:\n  govtune node status --node https://203.0.113.10:8100 --genesis genesis.json --wait 60"
    )]
    Status {
        /// The node.
        #[arg(long, env = "GOVTUNE_NODE")]
        node: String,
        /// The genesis file.
        #[arg(long, env = "GOVTUNE_GENESIS")]
        genesis: PathBuf,
        /// Seconds to wait for the node to answer.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
}

/// Runs a node command.
pub fn run_node_command(command: NodeCommand) -> Result<(), Failure> {
    match command {
        NodeCommand::Init { genesis, name, out } => {
            let (g, _) = genesis::load_genesis(&genesis).map_err(unchecked)?;
            let text = node::config::commented(&g, &name, &genesis).map_err(unchecked)?;
            genesis::write_new(&out, text.as_bytes(), 0o644).map_err(unchecked)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        NodeCommand::Status { node, genesis, wait } => {
            let (g, _) = genesis::load_genesis(&genesis).map_err(unchecked)?;
            let client = LightClient::from_genesis_file(&genesis)
                .map_err(unchecked)?
                .trust(Client::new(&node));
            let deadline = std::time::Instant::now() + Duration::from_secs(wait);
            let h = loop {
                match client.health() {
                    Ok(h) => break h,
                    Err(e) if std::time::Instant::now() >= deadline => return Err(unchecked(e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            };
            if h.genesis != g.digest() {
                return Err(Failure::violated(format!(
                    "{node} runs genesis {}, not this one ({})",
                    h.genesis,
                    g.digest()
                )));
            }
            println!(
                "{node}: {} ({}) height {} log size {} root {} peers {} checkpoint {}",
                h.authority,
                h.role,
                h.height,
                h.log_size,
                h.root,
                h.peers,
                h.checkpoint_height.map_or("none".into(), |c| c.to_string())
            );
            Ok(())
        }
    }
}
