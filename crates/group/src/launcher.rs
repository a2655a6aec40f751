//! What runs instances on the host that owns them: [`Launcher`] launches and adopts their
//! processes (stopping is the [`InstanceProcess`] handle's) and enforces their security groups.
//! `up`'s group controller and every `proxyfleet agent` go through it; [`LocalLauncher`] is
//! the one proxyfleet has: local processes, and one nftables table per state directory when
//! this process may manage one.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use proxyfleet_stack::{Group, Launch, Stack};

use crate::firewall::{self, Firewall, InstanceRules, Members};
use crate::process::InstanceProcess;

pub trait Launcher: Send + Sync {
    /// Starts `launch` with `dir` as its directory.
    fn launch(&self, launch: &Launch, dir: &Path) -> io::Result<InstanceProcess>;
    /// The instance's process, if `pid` still runs it (the same start time).
    fn adopt(&self, pid: u32, start_ticks: u64) -> Option<InstanceProcess>;
    /// Whether the kernel enforces security groups here. Without it, `proxyfleet proxy`
    /// instances are told their admitted sources and enforce them themselves.
    fn kernel_firewall(&self) -> bool;
    /// Makes `rules` — every instance of this host that has security groups — what the
    /// kernel enforces, replacing what it enforced before.
    fn enforce(&self, rules: &[InstanceRules]);
    /// Stops enforcing (the tier is going away).
    fn release(&self);
}

/// Local processes, and the firewall when there is one.
pub struct LocalLauncher {
    /// What `proxyfleet` in a launch template's command runs.
    self_exe: PathBuf,
    firewall: Option<Firewall>,
}

impl LocalLauncher {
    /// The firewall's table is named after `state_dir` (two tiers on one host never rewrite
    /// each other's rules); none when this process may not manage one (said once, in the log).
    pub fn new(state_dir: &Path, self_exe: PathBuf) -> LocalLauncher {
        LocalLauncher {
            self_exe,
            firewall: Firewall::open(state_dir),
        }
    }
}

impl Launcher for LocalLauncher {
    fn launch(&self, launch: &Launch, dir: &Path) -> io::Result<InstanceProcess> {
        InstanceProcess::launch(launch, dir, &self.self_exe)
    }

    fn adopt(&self, pid: u32, start_ticks: u64) -> Option<InstanceProcess> {
        InstanceProcess::adopt(pid, start_ticks)
    }

    fn kernel_firewall(&self) -> bool {
        self.firewall.is_some()
    }

    fn enforce(&self, rules: &[InstanceRules]) {
        if let Some(fw) = &self.firewall {
            if let Err(e) = fw.write(rules) {
                tracing::error!(error = %e, "cannot update the firewall");
            }
        }
    }

    fn release(&self) {
        if let Some(fw) = &self.firewall {
            fw.remove();
        }
    }
}

/// The launch of an instance of `group`, ready for `launcher`: a `proxyfleet proxy` instance
/// gets the destination guard's settings and, without a kernel firewall, the sources its
/// security groups admit (`PROXYFLEET_ALLOWED_SOURCES`).
pub fn prepare(
    mut launch: Launch,
    stack: &Stack,
    group: &Group,
    launcher: &dyn Launcher,
    members: Members,
) -> Launch {
    if firewall::runs_own_proxy(&launch.command) {
        launch.environment.extend(crate::guard::environment(stack));
        if !launcher.kernel_firewall() {
            if let Some(sources) = firewall::allowed_sources(stack, group, members) {
                launch
                    .environment
                    .push(("PROXYFLEET_ALLOWED_SOURCES".to_string(), sources));
            }
        }
    }
    launch
}

/// Every rule for `instances` (group, address): what [`Launcher::enforce`] takes.
pub fn rules<'a>(
    stack: &Stack,
    instances: impl IntoIterator<Item = (&'a Group, IpAddr)>,
    members: Members,
) -> Vec<InstanceRules> {
    instances
        .into_iter()
        .filter_map(|(g, addr)| firewall::instance_rules(stack, g, addr, members))
        .collect()
}

/// One [`LocalLauncher`] for several hosts that one process runs (`up`: an agent per
/// zone over one state directory): each host's handle ([`SharedLauncher::for_host`]) keeps
/// its own instances' rules, and the firewall's one table enforces all of them — one host's
/// rewrite never drops another's rules.
pub struct SharedLauncher {
    inner: LocalLauncher,
    rules: std::sync::Mutex<std::collections::BTreeMap<String, Vec<InstanceRules>>>,
}

impl SharedLauncher {
    pub fn new(state_dir: &Path, self_exe: PathBuf) -> std::sync::Arc<SharedLauncher> {
        std::sync::Arc::new(SharedLauncher {
            inner: LocalLauncher::new(state_dir, self_exe),
            rules: Default::default(),
        })
    }

    /// The launcher `host`'s instances are launched, adopted and protected through.
    pub fn for_host(self: &std::sync::Arc<Self>, host: &str) -> std::sync::Arc<dyn Launcher> {
        std::sync::Arc::new(HostLauncher {
            shared: self.clone(),
            host: host.to_string(),
        })
    }

    /// Stops enforcing, for every host (the tier is going away).
    pub fn release(&self) {
        self.lock().clear();
        self.inner.release();
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Vec<InstanceRules>>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct HostLauncher {
    shared: std::sync::Arc<SharedLauncher>,
    host: String,
}

impl Launcher for HostLauncher {
    fn launch(&self, launch: &Launch, dir: &Path) -> io::Result<InstanceProcess> {
        self.shared.inner.launch(launch, dir)
    }

    fn adopt(&self, pid: u32, start_ticks: u64) -> Option<InstanceProcess> {
        self.shared.inner.adopt(pid, start_ticks)
    }

    fn kernel_firewall(&self) -> bool {
        self.shared.inner.kernel_firewall()
    }

    fn enforce(&self, rules: &[InstanceRules]) {
        let mut all = self.shared.lock();
        all.insert(self.host.clone(), rules.to_vec());
        let union: Vec<InstanceRules> = all.values().flatten().cloned().collect();
        // Written under the lock: two hosts' rewrites never interleave.
        self.shared.inner.enforce(&union);
    }

    fn release(&self) {
        let mut all = self.shared.lock();
        all.remove(&self.host);
        if all.is_empty() {
            self.shared.inner.release();
        } else {
            let union: Vec<InstanceRules> = all.values().flatten().cloned().collect();
            self.shared.inner.enforce(&union);
        }
    }
}
