//! Hosts for multi-host tests: Linux network namespaces made with
//! `ip netns` (iproute2), each host with its own address on its own
//! interface, joined by veth pairs to a bridge that lives in a namespace
//! of its own. Nothing is added to the caller's namespace, and traffic
//! stays between the namespaces made here; [`Lab`]'s `Drop` kills every
//! process left in them and deletes them, also when a test fails.
//!
//! Creating namespaces needs root (or `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`).
//! A test that cannot create them fails, unless [`SKIP_VAR`] is set.

use std::net::Ipv4Addr;
use std::process::Command;

/// Set (to anything) to let a multi-host test skip where namespaces
/// cannot be made; unset, such a test fails.
pub const SKIP_VAR: &str = "GOVTUNE_SKIP_NETNS";

/// What went wrong making or driving the namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {output}")]
    Ip {
        /// Its arguments.
        args: String,
        /// What it printed (or why it could not run).
        output: String,
    },
    /// No host of that name.
    #[error("no host named {0}")]
    NoHost(String),
}

/// One host: a namespace with one address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's name in the test.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// The bridge-side end of its veth pair (in the bridge's namespace),
    /// or `None` when the host has no link (a [`Lab::single`] host).
    link: Option<String>,
}

/// A set of hosts in network namespaces, removed on drop.
#[derive(Debug)]
pub struct Lab {
    bridge: Option<String>,
    hosts: Vec<Host>,
}

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let err = |output: String| NetnsError::Ip {
        args: args.join(" "),
        output,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| err(format!("cannot run ip (install iproute2): {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a multi-host test may skip: only when [`SKIP_VAR`] says so.
pub fn may_skip() -> bool {
    std::env::var_os(SKIP_VAR).is_some()
}

/// A short prefix for one lab's namespace and link names: this process's
/// pid and a random byte (link names are at most 15 bytes; a pid is at
/// most 22 bits).
fn prefix() -> String {
    format!("gt{:x}x{:02x}", std::process::id(), rand::random::<u8>())
}

/// Removes the namespaces an earlier test process made and could not
/// remove (it was killed): those named by [`prefix`] for a pid that no
/// longer runs.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("gt")
            .and_then(|r| r.split_once('x'))
            .and_then(|(hex, _)| u32::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_in(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Lab {
    /// Hosts `(name, address)` on one /24 (every address in it), each in
    /// its own namespace, joined by a bridge in another namespace.
    pub fn bridged(hosts: &[(&str, Ipv4Addr)]) -> Result<Self, NetnsError> {
        remove_stale();
        let p = prefix();
        let bridge_ns = format!("{p}-bridge");
        let mut lab = Lab {
            bridge: None,
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &bridge_ns])?;
        lab.bridge = Some(bridge_ns.clone());
        ip(&["-n", &bridge_ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        for (i, (name, addr)) in hosts.iter().enumerate() {
            let ns = format!("{p}-{name}");
            ip(&["netns", "add", &ns])?;
            let host_end = format!("{p}h{i}");
            let bridge_end = format!("{p}b{i}");
            lab.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                addr: *addr,
                link: Some(bridge_end.clone()),
            });
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Both ends are made inside the host's namespace, then one
            // moves to the bridge's: nothing touches the caller's.
            ip(&[
                "-n",
                &ns,
                "link",
                "add",
                &host_end,
                "type",
                "veth",
                "peer",
                "name",
                &bridge_end,
            ])?;
            ip(&["-n", &ns, "link", "set", &bridge_end, "netns", &bridge_ns])?;
            ip(&["-n", &ns, "link", "set", &host_end, "name", "eth0"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &bridge_ns, "link", "set", &bridge_end, "master", "br0"])?;
            ip(&["-n", &bridge_ns, "link", "set", &bridge_end, "up"])?;
        }
        Ok(lab)
    }

    /// One namespace holding every address in `addrs` on its loopback: a
    /// page of commands written for several hosts runs in it unchanged.
    pub fn single(name: &str, addrs: &[Ipv4Addr]) -> Result<Self, NetnsError> {
        remove_stale();
        let ns = format!("{}-{name}", prefix());
        ip(&["netns", "add", &ns])?;
        let lab = Lab {
            bridge: None,
            hosts: vec![Host {
                name: name.to_string(),
                ns: ns.clone(),
                addr: addrs.first().copied().unwrap_or(Ipv4Addr::LOCALHOST),
                link: None,
            }],
        };
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        for a in addrs {
            ip(&["-n", &ns, "addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        Ok(lab)
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host, NetnsError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| NetnsError::NoHost(name.to_string()))
    }

    /// `program` to run on host `name` (`ip netns exec`).
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command, NetnsError> {
        let h = self.host(name)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h.ns]).arg(program);
        Ok(c)
    }

    /// Cuts host `name`'s link (its bridge-side end goes down): its
    /// processes run on, unreachable.
    pub fn cut(&self, name: &str) -> Result<(), NetnsError> {
        self.set_link(name, "down")
    }

    /// Restores a link [`Lab::cut`] cut.
    pub fn restore(&self, name: &str) -> Result<(), NetnsError> {
        self.set_link(name, "up")
    }

    fn set_link(&self, name: &str, state: &str) -> Result<(), NetnsError> {
        let h = self.host(name)?;
        match (&self.bridge, &h.link) {
            (Some(b), Some(l)) => ip(&["-n", b, "link", "set", l, state]).map(|_| ()),
            _ => Err(NetnsError::NoHost(format!("{name} (it has no link)"))),
        }
    }

    /// Kills every process running in host `name`'s namespace.
    pub fn kill_all(&self, name: &str) -> Result<(), NetnsError> {
        let h = self.host(name)?;
        kill_in(&h.ns);
        Ok(())
    }
}

/// Makes the process `cmd` starts get SIGKILL when the thread that starts
/// it ends (a test killed by its runner leaves no node running).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// SIGKILLs every process in namespace `ns`.
fn kill_in(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            kill_in(&h.ns);
        }
        // Give the kernel a moment to reap them before the namespaces go.
        std::thread::sleep(std::time::Duration::from_millis(200));
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        if let Some(b) = &self.bridge {
            let _ = ip(&["netns", "del", b]);
        }
    }
}
