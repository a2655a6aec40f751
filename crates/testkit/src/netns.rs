//! Hosts as network namespaces, for the drills across hosts.
//!
//! A [`Net`] is one Ethernet segment: a bridge in a namespace of its own (the "switch", so
//! the test machine's own namespace takes no part and nothing is routed beyond the segment)
//! and, joined to it by a veth pair each, the namespaces the test adds — hosts, the app
//! network, the service network. Each namespace's end is `eth0`, with the address the test
//! gives it in 198.18.0.0/16 (the benchmarking range, used inside these namespaces only, with
//! no route anywhere else) and `lo` up.
//!
//! Killing a host is SIGKILL to every process in its namespace and its switch port down, so
//! no FIN or RST reaches anyone; partitioning is the port down alone. Everything is removed
//! on drop, however the test ends: the processes in the namespaces are killed by pid, the
//! namespaces deleted.
//!
//! Code runs inside a namespace from the test process with [`run_in`]: a thread that joins
//! the namespace (`setns`) and whose sockets, and the threads it starts, stay there.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::Owned;

/// The segment's prefix length: every address of 198.18.0.0/16 is on-link, so node and
/// instance addresses added as /32s anywhere are reached by ARP.
const PREFIX: u8 = 16;

/// Why the namespace drills cannot run here, if they cannot: they need root (CAP_NET_ADMIN,
/// CAP_SYS_ADMIN for `setns`) and iproute2.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".to_string());
    }
    let ip = Command::new("ip").args(["netns", "list"]).output();
    match ip {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `ip` (iproute2): {e}")),
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One namespace on the segment.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Its name under /run/netns.
    pub name: String,
    /// Its primary address on `eth0`.
    pub address: Ipv4Addr,
    /// Its veth end in the switch namespace.
    port: String,
}

/// A segment and its namespaces; removed on drop.
pub struct Net {
    prefix: String,
    switch: String,
    namespaces: Vec<(String, Namespace)>,
}

impl Net {
    /// A new, empty segment. Namespace names are `pf<pid>-<n>-<short>`, unique per test.
    pub fn new() -> Net {
        let prefix = format!(
            "pf{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{prefix}-sw");
        let net = Net {
            prefix,
            switch,
            namespaces: Vec::new(),
        };
        ip(&["netns", "add", &net.switch]);
        ip(&["-n", &net.switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net.switch, "link", "set", "br0", "up"]);
        ip(&["-n", &net.switch, "link", "set", "lo", "up"]);
        net
    }

    /// Adds namespace `short` (e.g. `a`, `app`) with `address` on its `eth0`.
    pub fn add(&mut self, short: &str, address: Ipv4Addr) -> Namespace {
        let n = self.namespaces.len();
        let name = format!("{}-{short}", self.prefix);
        // veth names live in one namespace (the switch) while paired: p<n> there, and the
        // far end is created inside the new namespace directly as eth0.
        let port = format!("p{n}");
        ip(&["netns", "add", &name]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &name,
        ]);
        ip(&["-n", &self.switch, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &self.switch, "link", "set", &port, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{address}/{PREFIX}"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        let ns = Namespace {
            name,
            address,
            port,
        };
        self.namespaces.push((short.to_string(), ns.clone()));
        ns
    }

    pub fn ns(&self, short: &str) -> &Namespace {
        self.namespaces
            .iter()
            .find(|(s, _)| s == short)
            .map(|(_, ns)| ns)
            .unwrap_or_else(|| panic!("no namespace {short}"))
    }

    /// Adds another address (a /32) to a namespace's `eth0`: a client's own source address.
    pub fn add_address(&self, short: &str, address: Ipv4Addr) {
        ip(&[
            "-n",
            &self.ns(short).name,
            "addr",
            "add",
            &format!("{address}/32"),
            "dev",
            "eth0",
        ]);
    }

    /// Starts `program args...` inside namespace `short` (`ip netns exec` replaces itself
    /// with the program: the pid is the program's).
    pub fn spawn(&self, short: &str, program: impl AsRef<Path>, args: &[&str]) -> Owned {
        self.spawn_with_env(short, program, args, &[])
    }

    pub fn spawn_with_env(
        &self,
        short: &str,
        program: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Owned {
        let program = program.as_ref().display().to_string();
        let mut all = vec![
            "netns",
            "exec",
            self.ns(short).name.as_str(),
            program.as_str(),
        ];
        all.extend_from_slice(args);
        Owned::spawn_with_env("ip", &all, env)
    }

    /// Sets the namespace's switch port up or down: down, nothing passes either way and
    /// nobody is told (its own `eth0` keeps its addresses and routes).
    pub fn link(&self, short: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.ns(short).port,
            state,
        ]);
    }

    /// Kills the host: its port down first (no FIN or RST leaves it), then SIGKILL to every
    /// process in its namespace.
    pub fn kill_host(&self, short: &str) {
        self.link(short, false);
        kill_all_in(&self.ns(short).name);
    }

    /// The IPv4 addresses on the namespace's `eth0` now.
    pub fn addresses(&self, short: &str) -> Vec<Ipv4Addr> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.ns(short).name,
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .expect("ip addr show");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let cidr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
                cidr.split('/').next()?.parse().ok()
            })
            .collect()
    }

    /// The pids of every process in the namespace now.
    pub fn pids(&self, short: &str) -> Vec<u32> {
        pids_in(&self.ns(short).name)
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, ns) in &self.namespaces {
            kill_all_in(&ns.name);
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
    }
}

/// Runs `f` on a thread inside namespace `ns` (by name) and returns its result. Sockets made
/// there belong to that namespace; threads `f` starts are in it too.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(ns);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    // SAFETY: setns on a namespace file descriptor we hold open; it affects this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
}

fn pids_in(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL to every process in the namespace — all of them this test's own descendants
/// (nothing else is ever started in a test's namespace) — until none is left.
fn kill_all_in(ns: &str) {
    for _ in 0..50 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory preconditions; the pid is in our own namespace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `ip ARGS...`, which must succeed: set-up failing is the test's failure, said plainly.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
