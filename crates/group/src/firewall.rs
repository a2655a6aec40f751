//! Security groups, enforced by the kernel: one nftables table (`inet proxyfleet_XXXXXXXX`,
//! named after the state directory) owned by proxyfleet, rewritten whole (one atomic `nft -f` transaction) whenever instances change,
//! removed on stop. Traffic to an instance's address is accepted only when an ingress rule of
//! its security groups admits it; replies to the instance's own connections pass (conntrack).
//!
//! nftables is driven through its command-line tool: it is the interface the kernel project
//! supports for scripts, and the netlink crates for it are young.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use proxyfleet_stack::{Protocol, Source};

use crate::model::Lifecycle;
use crate::runtime::Shared;

/// One table per state directory: two stacks on one host never rewrite each other's rules.
pub struct Firewall {
    table: String,
}

impl Firewall {
    /// The firewall, when this process may manage one (root with `nft` available); otherwise
    /// `None`, with the reason logged once.
    pub fn open(state_dir: &std::path::Path) -> Option<Firewall> {
        let key = proxyfleet_lb::maglev::hash(0, state_dir.as_os_str().as_encoded_bytes());
        let fw = Firewall {
            table: format!("proxyfleet_{:08x}", key & 0xffff_ffff),
        };
        match fw.apply(&fw.reset()) {
            Ok(()) => Some(fw),
            Err(e) => {
                tracing::warn!(
                    "security groups are NOT enforced by the kernel here ({e}); instances are shown as unprotected"
                );
                None
            }
        }
    }

    fn apply(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Creating then deleting removes the table whether it existed or not.
    fn reset(&self) -> String {
        let table = &self.table;
        format!("add table inet {table}\ndelete table inet {table}\n")
    }

    /// Removes the table (on stop).
    pub fn remove(&self) {
        if let Err(e) = self.apply(&self.reset()) {
            tracing::warn!(error = %e, "cannot remove the firewall table");
        }
    }
}

/// Rewrites the table for the instances now alive.
pub fn refresh(shared: &Shared) {
    let Some(fw) = &shared.firewall else { return };
    let script = ruleset(shared, &fw.table);
    if let Err(e) = fw.apply(&script) {
        tracing::error!(error = %e, "cannot update the firewall");
    }
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

/// The whole table: flush and refill in one transaction.
fn ruleset(shared: &Shared, table: &str) -> String {
    let mut s = format!(
        "add table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    ct state established,related accept\n"
    );
    for group in shared.groups.values() {
        let instances: Vec<IpAddr> = group
            .lock()
            .instances
            .iter()
            .filter(|t| t.info.lifecycle != Lifecycle::Terminated)
            .map(|t| t.info.address)
            .collect();
        if group.spec.security_groups.is_empty() {
            continue;
        }
        for addr in instances {
            let fam = family(&addr);
            for sg_name in &group.spec.security_groups {
                let Some(sg) = shared.stack.security_group(sg_name) else {
                    continue;
                };
                for rule in &sg.ingress {
                    for source in sources(shared, &rule.source) {
                        if family(&source.0) != fam {
                            continue;
                        }
                        let ports = match rule.protocol {
                            Protocol::Tcp => {
                                format!(" tcp dport {}-{}", rule.ports.0, rule.ports.1)
                            }
                            Protocol::Udp => {
                                format!(" udp dport {}-{}", rule.ports.0, rule.ports.1)
                            }
                            Protocol::All => String::new(),
                        };
                        let _ = writeln!(
                            s,
                            "    {fam} daddr {addr}{ports} {fam} saddr {}/{} accept",
                            source.0, source.1
                        );
                    }
                }
            }
            // Everything else to this instance: dropped, as a security group does.
            let _ = writeln!(s, "    {fam} daddr {addr} drop");
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// Without a kernel firewall, `proxyfleet proxy` instances enforce their security groups
/// themselves: this is the list of sources (`CIDR,CIDR,...`) for `PROXYFLEET_ALLOWED_SOURCES`,
/// when the group has security groups at all. (Ports are the instance's own; the rules' port
/// ranges are not needed for a process that listens on one.)
pub fn allowed_sources(shared: &Shared, group: &crate::runtime::GroupRuntime) -> Option<String> {
    if group.spec.security_groups.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for sg_name in &group.spec.security_groups {
        let Some(sg) = shared.stack.security_group(sg_name) else {
            continue;
        };
        for rule in &sg.ingress {
            for (ip, len) in sources(shared, &rule.source) {
                list.push(format!("{ip}/{len}"));
            }
        }
    }
    Some(list.join(","))
}

/// Whether a launch runs proxyfleet's own proxy (which can enforce security groups itself).
pub fn runs_own_proxy(command: &[String]) -> bool {
    command.first().is_some_and(|c| c == "proxyfleet")
        && command.get(1).is_some_and(|c| c == "proxy")
}

/// (network address, prefix length) of every address a source stands for.
fn sources(shared: &Shared, source: &Source) -> Vec<(IpAddr, u8)> {
    match source {
        Source::Cidr { net, .. } => vec![(net.network(), net.prefix_len())],
        Source::LoadBalancer(name) => shared
            .stack
            .load_balancer(name)
            .map(|lb| {
                lb.nodes
                    .iter()
                    .map(|n| (n.address, host_len(&n.address)))
                    .collect()
            })
            .unwrap_or_default(),
        Source::SecurityGroup(name) => shared
            .groups
            .values()
            .filter(|g| g.spec.security_groups.contains(name))
            .flat_map(|g| {
                g.lock()
                    .instances
                    .iter()
                    .map(|t| (t.info.address, host_len(&t.info.address)))
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

fn host_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}
