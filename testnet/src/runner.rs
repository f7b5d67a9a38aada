//! A local testnet: a genesis for N loopback nodes, one `govtune node`
//! process each, and faults on demand (SIGKILL, restart, SIGSTOP, SIGCONT).
//!
//! The runner's state (ports, pids, files) lives in `DIR/testnet.json`, so
//! `govtune testnet kill node-1` in one shell acts on the testnet `testnet
//! up` started in another.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use genesis::{ceremony, write_ceremony};
use provenance::api::HealthAnswer;
use provenance::genesis::ConsortiumDescription;
use provenance::Timestamp;
use serde::{Deserialize, Serialize};

use lightclient::Client;

/// Why a testnet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// Files.
    #[error("{0}")]
    Io(String),
    /// A node's API.
    #[error(transparent)]
    Client(#[from] lightclient::ClientError),
    /// What a node served did not verify.
    #[error(transparent)]
    Verify(#[from] lightclient::VerifyError),
    /// An authority's tool (registering, the campaign driver).
    #[error(transparent)]
    Roles(#[from] roles::RolesError),
    /// Training.
    #[error(transparent)]
    Tuner(#[from] tuner::TunerError),
    /// The genesis or key files.
    #[error(transparent)]
    Genesis(#[from] genesis::Error),
    /// A ledger object.
    #[error(transparent)]
    Provenance(#[from] provenance::Error),
    /// The ledger workload.
    #[error(transparent)]
    Workload(Box<crate::workload::WorkloadError>),
    /// What the demo or benchmark found wrong (a plan that does not fit
    /// its sources, a check that failed, an outcome it did not expect).
    #[error("{0}")]
    Run(String),
    /// A node that does not exist or is not in the expected state.
    #[error("{0}")]
    Node(String),
    /// Waiting ran out.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl From<std::io::Error> for TestnetError {
    fn from(e: std::io::Error) -> Self {
        TestnetError::Io(e.to_string())
    }
}

impl From<serde_json::Error> for TestnetError {
    fn from(e: serde_json::Error) -> Self {
        TestnetError::Run(format!("JSON: {e}"))
    }
}

impl<T> From<std::sync::PoisonError<T>> for TestnetError {
    fn from(_: std::sync::PoisonError<T>) -> Self {
        TestnetError::Run("a thread panicked while holding shared state".into())
    }
}

impl From<crate::workload::WorkloadError> for TestnetError {
    fn from(e: crate::workload::WorkloadError) -> Self {
        TestnetError::Workload(Box::new(e))
    }
}

fn io(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> TestnetError {
    move |e| TestnetError::Io(format!("{what}: {e}"))
}

/// One node of the testnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node name (`node-0`, ...).
    pub name: String,
    /// Its authority.
    pub authority: String,
    /// Its role.
    pub role: String,
    /// HTTP API `host:port`.
    pub api: String,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its admin token file.
    pub token: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The running process, if any.
    pub pid: Option<u32>,
}

/// Consortium parameters a testnet's genesis takes instead of the
/// defaults (`provenance::ConsortiumParams`).
#[derive(Debug, Clone, Default)]
pub struct NodeSettings {
    /// View timeout (ms).
    pub view_timeout_ms: Option<u64>,
    /// Heartbeat (ms).
    pub heartbeat_ms: Option<u64>,
    /// Most entries per block.
    pub max_block_entries: Option<u32>,
    /// How long (ms) an entry may stay pending before it expires.
    pub pending_expiry_ms: Option<u64>,
    /// Authorities whose nodes collude (test-only: a binary built with
    /// the node's `collusion` feature turns off their checks).
    pub collude: Vec<String>,
    /// Each node's cap on entries one authority may have pending there
    /// (node configuration `max_pending_per_authority`).
    pub max_pending_per_authority: Option<usize>,
    /// Serve each node's API over https with the certificate genesis pins
    /// for it (clients then dial `https://`).
    pub tls: bool,
    /// Signing members to add, by authority: nodes that co-sign for it but
    /// never vote (named `node-<n>`, `node-<n+1>`, ... after the
    /// validators). The authority then signs with a majority of its nodes.
    pub signing_members: Vec<(String, u16)>,
    /// Witnesses genesis names: each one's verifier key (as `govtune
    /// witness init` prints it) and URL.
    pub witnesses: Vec<(String, String)>,
    /// Cosignatures required (default: every witness).
    pub witness_quorum: Option<u16>,
    /// How often (ms) nodes submit to the witnesses.
    pub witness_interval_ms: Option<u64>,
}

/// A local testnet.
#[derive(Debug, Serialize, Deserialize)]
pub struct Testnet {
    /// Its folder.
    pub dir: PathBuf,
    /// The `govtune` binary.
    pub binary: PathBuf,
    /// The nodes.
    pub nodes: Vec<NodeEntry>,
    /// Authorities whose nodes collude (`GOVTUNE_COLLUDE`, test-only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collude: Vec<String>,
    #[serde(skip)]
    children: Vec<Option<Child>>,
}

/// A base port whose `count` ports are free now, below Linux's default
/// ephemeral range (32768-60999): a node stopped and restarted by a test
/// must find its ports again, and an outgoing connection's ephemeral port
/// would take one of them while it is down.
fn free_base(count: u16) -> Result<u16, TestnetError> {
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let base = 20_000 + (x % (12_000 - u64::from(count))) as u16;
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    Err(TestnetError::Io("no free port range on loopback".into()))
}

impl Testnet {
    /// Writes a genesis and node configurations for `n` loopback nodes into
    /// `dir` (which must not hold a testnet yet). With n = 4: two
    /// data-source authorities, governance and an operator; otherwise one
    /// governance, one operator and n - 2 data-source authorities.
    pub fn create(dir: &Path, n: u16, binary: &Path, settings: &NodeSettings) -> Result<Self, TestnetError> {
        if n < 4 {
            return Err(TestnetError::Node(
                "a testnet needs at least 4 nodes (n = 3f + 1, f >= 1)".into(),
            ));
        }
        if dir.join("testnet.json").exists() {
            return Err(TestnetError::Io(format!(
                "{} already holds a testnet",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(io(dir.display()))?;
        // Absolute, so that testnet.json holds from any directory.
        let dir = &fs::canonicalize(dir).map_err(io(dir.display()))?;
        let members: u16 = settings.signing_members.iter().map(|(_, m)| *m).sum();
        let total = n + members;
        let base = free_base(2 * total)?;
        let mut desc = if n == 4 {
            ConsortiumDescription::local_testnet(base, base + total)
        } else {
            ConsortiumDescription::one_node_each("govtune-testnet", n, base, base + total)
        };
        let mut next = n;
        for (authority, count) in &settings.signing_members {
            let a = desc
                .authorities
                .iter_mut()
                .find(|a| a.id.as_str() == authority)
                .ok_or_else(|| TestnetError::Node(format!("no authority {authority} for signing members")))?;
            for _ in 0..*count {
                a.nodes.push(provenance::genesis::NodeDescription {
                    name: format!("node-{next}"),
                    p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", base + next),
                    api_listen: format!("127.0.0.1:{}", base + total + next),
                    signing_member: true,
                    api_certificate: Default::default(),
                });
                next += 1;
            }
        }
        desc.witnessing = provenance::genesis::WitnessingDescription {
            witnesses: settings
                .witnesses
                .iter()
                .map(|(key, url)| provenance::genesis::WitnessDescription {
                    key: key.clone(),
                    url: url.clone(),
                })
                .collect(),
            quorum: settings.witness_quorum,
            interval_ms: settings.witness_interval_ms,
        };
        // Consortium-wide parameters live in genesis.
        let p = &mut desc.params;
        p.view_timeout_ms = settings.view_timeout_ms.unwrap_or(p.view_timeout_ms);
        p.heartbeat_ms = settings.heartbeat_ms.unwrap_or(p.heartbeat_ms);
        p.max_block_entries = settings.max_block_entries.unwrap_or(p.max_block_entries);
        p.pending_expiry_ms = settings.pending_expiry_ms.unwrap_or(p.pending_expiry_ms);
        let now = Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        );
        let c = ceremony(&desc, now, &mut rand::rngs::OsRng).map_err(|e| TestnetError::Io(e.to_string()))?;
        write_ceremony(dir, &c).map_err(|e| TestnetError::Io(e.to_string()))?;
        let mut nodes = Vec::new();
        for rec in &c.dealt.genesis.nodes {
            let ndir = dir.join("nodes").join(&rec.name);
            let config = ndir.join("node.toml");
            let mut text = format!(
                "genesis = \"../../genesis.json\"\nkeys = \"node.key\"\nadmin_token = \"admin.token\"\ndata_dir = \"../../data/{}\"\n",
                rec.name
            );
            if let Some(cap) = settings.max_pending_per_authority {
                text.push_str(&format!("max_pending_per_authority = {cap}\n"));
            }
            if settings.tls {
                text.push_str("tls_certificate = \"api.crt\"\ntls_key = \"api.key\"\n");
            }
            let role = c
                .dealt
                .genesis
                .authority(&rec.authority)
                .map(|a| a.role.to_string())
                .unwrap_or_default();
            if role == provenance::Role::DataSource.to_string() {
                // Its rights-holder's packages (`campaign run --testnet`
                // writes them), for replay audits.
                let sources = ndir.join("sources");
                fs::create_dir_all(&sources).map_err(io(sources.display()))?;
                text.push_str("own_sources = \"sources\"\n");
            }
            fs::write(&config, text).map_err(io(config.display()))?;
            nodes.push(NodeEntry {
                name: rec.name.clone(),
                authority: rec.authority.to_string(),
                role,
                api: if settings.tls {
                    format!("https://{}", rec.api_listen)
                } else {
                    rec.api_listen.clone()
                },
                config,
                token: ndir.join("admin.token"),
                log: dir.join("logs").join(format!("{}.log", rec.name)),
                pid: None,
            });
        }
        fs::create_dir_all(dir.join("logs")).map_err(io("logs"))?;
        let t = Self {
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            children: nodes.iter().map(|_| None).collect(),
            nodes,
            collude: settings.collude.clone(),
        };
        t.save()?;
        Ok(t)
    }

    /// Loads the testnet in `dir`.
    pub fn load(dir: &Path) -> Result<Self, TestnetError> {
        let p = dir.join("testnet.json");
        let text = fs::read_to_string(&p).map_err(io(p.display()))?;
        let mut t: Testnet =
            serde_json::from_str(&text).map_err(|e| TestnetError::Io(format!("{}: {e}", p.display())))?;
        t.children = t.nodes.iter().map(|_| None).collect();
        Ok(t)
    }

    /// Writes `testnet.json`.
    pub fn save(&self) -> Result<(), TestnetError> {
        let p = self.dir.join("testnet.json");
        let text = serde_json::to_string_pretty(self).map_err(|e| TestnetError::Io(e.to_string()))?;
        fs::write(&p, text).map_err(io(p.display()))
    }

    /// The genesis file.
    pub fn genesis_path(&self) -> PathBuf {
        self.dir.join("genesis.json")
    }

    /// The index of a node by name (`node-1`) or number (`1`).
    pub fn find(&self, name: &str) -> Result<usize, TestnetError> {
        self.nodes
            .iter()
            .position(|n| n.name == name || n.name == format!("node-{name}"))
            .ok_or_else(|| TestnetError::Node(format!("no node {name:?} in this testnet")))
    }

    /// A client of node `i` (over https, accepting only the certificates
    /// genesis pins).
    pub fn client(&self, i: usize) -> Client {
        let client = Client::new(&self.nodes[i].api);
        if !self.nodes[i].api.starts_with("https://") {
            return client;
        }
        let pinned = fs::read_to_string(self.genesis_path())
            .ok()
            .and_then(|t| serde_json::from_str::<genesis::GenesisFile>(&t).ok())
            .map(|f| {
                f.genesis
                    .nodes
                    .into_iter()
                    .map(|n| n.api_certificate.0)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        client.pinned(&pinned)
    }

    /// A client of node `i` with its admin token.
    pub fn admin(&self, i: usize) -> Result<Client, TestnetError> {
        let t = fs::read_to_string(&self.nodes[i].token).map_err(io(self.nodes[i].token.display()))?;
        Ok(self.client(i).with_token(&t))
    }

    /// The index of the first node of a role (`data-source`, `governance`,
    /// `operator`).
    pub fn by_role(&self, role: &str) -> Result<usize, TestnetError> {
        self.nodes
            .iter()
            .position(|n| n.role == role)
            .ok_or_else(|| TestnetError::Node(format!("no {role} node")))
    }

    /// Starts node `i` as its own process (detached: it outlives the
    /// runner; logs go to its log file).
    pub fn start(&mut self, i: usize) -> Result<(), TestnetError> {
        self.start_with(i, &[])
    }

    /// Starts node `i` with extra environment variables (a test binary's
    /// Byzantine member, for one).
    pub fn start_with(&mut self, i: usize, env: &[(&str, &str)]) -> Result<(), TestnetError> {
        if self.alive(i) {
            return Err(TestnetError::Node(format!(
                "{} is already running",
                self.nodes[i].name
            )));
        }
        let n = &self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(io(n.log.display()))?;
        let err = log.try_clone().map_err(io(n.log.display()))?;
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.binary);
        cmd.envs(env.iter().copied());
        let child = cmd
            .arg("node")
            .arg("--config")
            .arg(&n.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("GOVTUNE_COLLUDE", self.collude.join(","))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io(self.binary.display()))?;
        self.nodes[i].pid = Some(child.id());
        self.children[i] = Some(child);
        self.save()
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) -> Result<(), TestnetError> {
        for i in 0..self.nodes.len() {
            if !self.alive(i) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Whether node `i`'s process is alive (a stopped one counts).
    pub fn alive(&mut self, i: usize) -> bool {
        if let Some(c) = self.children[i].as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                self.children[i] = None;
                self.nodes[i].pid = None;
                return false;
            }
        }
        match self.nodes[i].pid {
            // Signal 0 checks existence; a zombie of ours was reaped above.
            // A pid read back from testnet.json counts only while it still
            // runs this node's configuration (pids are reused).
            Some(pid) => (unsafe { libc::kill(pid as i32, 0) == 0 }) && self.runs_node(pid, i),
            None => false,
        }
    }

    /// Whether process `pid` is node `i` (its command line names the node's
    /// configuration); true where `/proc` cannot tell.
    fn runs_node(&self, pid: u32, i: usize) -> bool {
        if self.children[i].is_some() {
            return true;
        }
        match fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmd) => {
                let want = self.nodes[i].config.as_os_str().as_encoded_bytes();
                cmd.split(|b| *b == 0).any(|arg| arg == want)
            }
            Err(_) => !Path::new("/proc/self").exists(),
        }
    }

    fn signal(&mut self, i: usize, sig: i32) -> Result<(), TestnetError> {
        if !self.alive(i) {
            return Err(TestnetError::Node(format!(
                "{} is not running",
                self.nodes[i].name
            )));
        }
        let pid = self.nodes[i].pid.unwrap_or(0) as i32;
        // SAFETY: kill(2) with a pid we started; no memory is involved.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(TestnetError::Node(format!(
                "signal {sig} to {}: {}",
                self.nodes[i].name,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<(), TestnetError> {
        let pid = self.nodes[i].pid;
        self.signal(i, libc::SIGKILL)?;
        if let Some(mut c) = self.children[i].take() {
            let _ = c.wait();
        } else if let Some(pid) = pid {
            // Not our child: wait until it has exited (its files, the
            // store's lock among them, are closed once it is a zombie or
            // gone), not merely until its command line is torn down.
            let deadline = Instant::now() + Duration::from_secs(5);
            while running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.nodes[i].pid = None;
        self.save()
    }

    /// SIGSTOPs node `i`.
    pub fn pause(&mut self, i: usize) -> Result<(), TestnetError> {
        self.signal(i, libc::SIGSTOP)
    }

    /// SIGCONTs node `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), TestnetError> {
        self.signal(i, libc::SIGCONT)
    }

    /// Kills (if running) and starts node `i` again.
    pub fn restart(&mut self, i: usize) -> Result<(), TestnetError> {
        if self.alive(i) {
            self.kill(i)?;
        }
        self.start(i)
    }

    /// Stops whatever nodes of the testnet in `dir` still run and deletes
    /// the folder; true if there was one. A folder without `testnet.json`
    /// is left alone (and refused): it is not a testnet's.
    pub fn remove(dir: &Path) -> Result<bool, TestnetError> {
        if !dir.exists() {
            return Ok(false);
        }
        if !dir.join("testnet.json").exists() {
            return Err(TestnetError::Io(format!(
                "{} exists and holds no testnet: not removing it",
                dir.display()
            )));
        }
        let mut t = Self::load(dir)?;
        t.down()?;
        fs::remove_dir_all(dir).map_err(io(dir.display()))?;
        Ok(true)
    }

    /// Stops every node (SIGTERM, then SIGKILL after 5 s).
    pub fn down(&mut self) -> Result<(), TestnetError> {
        for i in 0..self.nodes.len() {
            if self.alive(i) {
                let _ = self.signal(i, libc::SIGCONT);
                let _ = self.signal(i, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for i in 0..self.nodes.len() {
            while self.alive(i) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.alive(i) {
                let _ = self.kill(i);
            }
            self.nodes[i].pid = None;
        }
        self.save()
    }

    /// Waits until node `i` answers `/v1/health`.
    pub fn wait_healthy(&self, i: usize, timeout: Duration) -> Result<HealthAnswer, TestnetError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(h) = self.client(i).health() {
                return Ok(h);
            }
            if Instant::now() > deadline {
                return Err(TestnetError::Timeout(format!(
                    "{} not healthy after {timeout:?} (see {})",
                    self.nodes[i].name,
                    self.nodes[i].log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every node answers and sees all its peers.
    pub fn wait_all_healthy(&self, timeout: Duration) -> Result<(), TestnetError> {
        let deadline = Instant::now() + timeout;
        let want = self.nodes.len() as u64 - 1;
        for i in 0..self.nodes.len() {
            loop {
                let h = self.wait_healthy(i, deadline.saturating_duration_since(Instant::now()))?;
                if h.peers >= want && h.height >= 1 {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(TestnetError::Timeout(format!(
                        "{} sees {} peers at height {}",
                        self.nodes[i].name, h.peers, h.height
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// (height, log size, root) per node, `None` for a node that does not
    /// answer.
    pub fn status(&self) -> Vec<Option<(u64, u64, String)>> {
        (0..self.nodes.len())
            .map(|i| {
                self.client(i)
                    .health()
                    .ok()
                    .map(|h| (h.height, h.log_size, h.root.to_hex()))
            })
            .collect()
    }

    /// Waits until every node reports the same log size (at least
    /// `min_size`) and root; returns them.
    pub fn wait_converged(&self, min_size: u64, timeout: Duration) -> Result<(u64, String), TestnetError> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if let Some(Some(first)) = s.first() {
                if first.1 >= min_size
                    && s.iter()
                        .all(|x| x.as_ref().map(|x| (x.1, &x.2)) == Some((first.1, &first.2)))
                {
                    return Ok((first.1, first.2.clone()));
                }
            }
            if Instant::now() > deadline {
                return Err(TestnetError::Timeout(format!("nodes did not converge: {s:?}")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Testnet {
    /// Processes this runner started itself (tests) are stopped with it;
    /// a CLI `testnet up` hands them over through `testnet.json` instead.
    fn drop(&mut self) {
        if std::thread::panicking() && !self.children.iter().all(Option::is_none) {
            self.dump_log_tails(60);
        }
        for c in self.children.iter_mut().flatten() {
            let pid = c.id() as i32;
            // SAFETY: signals to our own children.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

impl Testnet {
    /// Prints the last `lines` lines of every node's log to stderr: a
    /// failing test shows what the nodes said (their directory is deleted
    /// with the test's).
    /// With `GOVTUNE_KEEP_LOGS=DIR` set, the whole logs are also copied
    /// to DIR.
    pub fn dump_log_tails(&self, lines: usize) {
        let keep = std::env::var_os("GOVTUNE_KEEP_LOGS").map(PathBuf::from);
        for n in &self.nodes {
            if let Some(k) = &keep {
                let _ = fs::create_dir_all(k);
                let _ = fs::copy(&n.log, k.join(format!("{}.log", n.name)));
            }
            let text = fs::read_to_string(&n.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- {} ({}), last {} lines ----",
                n.name,
                n.log.display(),
                lines.min(all.len())
            );
            for l in &all[all.len().saturating_sub(lines)..] {
                eprintln!("{l}");
            }
        }
    }

    /// Forgets the child handles so dropping the runner leaves the nodes
    /// running (for the CLI's `testnet up`).
    pub fn detach(&mut self) {
        for c in &mut self.children {
            *c = None;
        }
    }
}

/// A process's resident memory in bytes (Linux `/proc/<pid>/status`), if
/// it can be read.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Whether process `pid` exists and has not yet exited: some thread of it
/// is neither a zombie nor dead (its files, shared by its threads, are
/// closed only once every thread has exited).
fn running(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    })
}
