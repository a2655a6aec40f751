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

use proxyfleet_stack::{Group, Protocol, Source, Stack};

/// One table per state directory: two stacks on one host never rewrite each other's rules.
pub struct Firewall {
    table: String,
    /// The table's comment: `proxyfleet STATE_DIR`, so an operator (or a test cleaning up
    /// after a killed agent) can tell whose table it is.
    comment: String,
}

impl Firewall {
    /// The firewall, when this process may manage one (root with `nft` available); otherwise
    /// `None`, with the reason logged once.
    pub fn open(state_dir: &std::path::Path) -> Option<Firewall> {
        let key = proxyfleet_lb::maglev::hash(0, state_dir.as_os_str().as_encoded_bytes());
        // nftables keeps at most 128 bytes of comment; quotes would end it.
        let dir: String = state_dir
            .display()
            .to_string()
            .chars()
            .map(|c| if c == '"' || c.is_control() { '_' } else { c })
            .collect();
        let mut comment = format!("proxyfleet {dir}");
        while comment.len() > 120 {
            comment.pop();
        }
        let fw = Firewall {
            table: format!("proxyfleet_{:08x}", key & 0xffff_ffff),
            comment,
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

/// What may reach one instance: its security groups' ingress rules, sources resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRules {
    pub address: IpAddr,
    pub allow: Vec<Allow>,
}

/// One admitted source: `from` (network address, prefix length) on `protocol` `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub protocol: Protocol,
    pub ports: (u16, u16),
    pub from: (IpAddr, u8),
}

impl Firewall {
    /// Replaces the table with `rules` (one atomic transaction).
    pub fn write(&self, rules: &[InstanceRules]) -> Result<(), String> {
        self.apply(&ruleset(rules, &self.table, &self.comment))
    }
}

/// The addresses of the instances in a security group, by its name: how a rule whose source is
/// a security group is resolved (by `up` from its groups, by an agent from the shared state).
pub type Members<'a> = &'a dyn Fn(&str) -> Vec<IpAddr>;

/// The rules for an instance of `group` at `address`; `None` when the group has no security
/// group (everything may reach it).
pub fn instance_rules(
    stack: &Stack,
    group: &Group,
    address: IpAddr,
    members: Members,
) -> Option<InstanceRules> {
    if group.security_groups.is_empty() {
        return None;
    }
    let mut allow = Vec::new();
    for sg in group
        .security_groups
        .iter()
        .filter_map(|n| stack.security_group(n))
    {
        for rule in &sg.ingress {
            for from in sources(stack, &rule.source, members) {
                allow.push(Allow {
                    protocol: rule.protocol,
                    ports: rule.ports,
                    from,
                });
            }
        }
    }
    Some(InstanceRules { address, allow })
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

/// The whole table: flush and refill in one transaction.
fn ruleset(rules: &[InstanceRules], table: &str, comment: &str) -> String {
    let mut s = format!(
        "add table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n  comment \"{comment}\"\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    ct state established,related accept\n"
    );
    for r in rules {
        let addr = r.address;
        let fam = family(&addr);
        for a in r.allow.iter().filter(|a| family(&a.from.0) == fam) {
            let ports = match a.protocol {
                Protocol::Tcp => format!(" tcp dport {}-{}", a.ports.0, a.ports.1),
                Protocol::Udp => format!(" udp dport {}-{}", a.ports.0, a.ports.1),
                Protocol::All => String::new(),
            };
            let _ = writeln!(
                s,
                "    {fam} daddr {addr}{ports} {fam} saddr {}/{} accept",
                a.from.0, a.from.1
            );
        }
        // Everything else to this instance: dropped, as a security group does.
        let _ = writeln!(s, "    {fam} daddr {addr} drop");
    }
    s.push_str("  }\n}\n");
    s
}

/// Without a kernel firewall, `proxyfleet proxy` instances enforce their security groups
/// themselves: this is the list of sources (`CIDR,CIDR,...`) for `PROXYFLEET_ALLOWED_SOURCES`,
/// when the group has security groups at all. (Ports are the instance's own; the rules' port
/// ranges are not needed for a process that listens on one.)
pub fn allowed_sources(stack: &Stack, group: &Group, members: Members) -> Option<String> {
    let rules = instance_rules(stack, group, IpAddr::from([0, 0, 0, 0]), members)?;
    let list: Vec<String> = rules
        .allow
        .iter()
        .map(|a| format!("{}/{}", a.from.0, a.from.1))
        .collect();
    Some(list.join(","))
}

/// Whether a launch runs proxyfleet's own proxy (which can enforce security groups itself).
pub fn runs_own_proxy(command: &[String]) -> bool {
    command.first().is_some_and(|c| c == "proxyfleet")
        && command.get(1).is_some_and(|c| c == "proxy")
}

/// (network address, prefix length) of every address a source stands for.
fn sources(stack: &Stack, source: &Source, members: Members) -> Vec<(IpAddr, u8)> {
    match source {
        Source::Cidr { net, .. } => vec![(net.network(), net.prefix_len())],
        Source::LoadBalancer(name) => stack
            .load_balancer(name)
            .map(|lb| {
                lb.nodes
                    .iter()
                    .map(|n| (n.address, host_len(&n.address)))
                    .collect()
            })
            .unwrap_or_default(),
        Source::SecurityGroup(name) => members(name)
            .into_iter()
            .map(|a| (a, host_len(&a)))
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
