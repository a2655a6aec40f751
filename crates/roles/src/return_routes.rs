//! Return routing for client-IP preservation across hosts (`preserve_client_ip: true,
//! transparent: true` in a stack with `hosts:`).
//!
//! A node connects to an instance *from the client's address* (`IP_TRANSPARENT`), so the
//! instance answers the client's address — and left alone, its host would send that answer
//! straight to the client, which never opened that connection. The answer has to go back to
//! the host whose node opened the connection, and that host has to deliver it to the node's
//! socket although the address is not its own. Node addresses move between hosts, so this
//! is decided per connection, on every host, by what the agent installs here:
//!
//! - **instance side**: a connection that arrives from another host's MAC (a map kept from
//!   the neighbour table: [`follow_neighbours`]) with a source that is not a host's own
//!   address gets that host's connection mark; the instance's replies carry it as their
//!   packet mark, and a routing table per host sends them to that host's address. A
//!   connection opened by a node on this same host (locally, from an address that is not
//!   local) gets the local mark instead, and its replies are delivered here;
//! - **node side**: a packet for one of this host's transparent sockets (nftables' `socket
//!   transparent 1`) gets the local mark, and the local table (`local 0.0.0.0/0 dev lo`)
//!   delivers it to the socket — the return half of a TPROXY set-up.
//!
//! Rules and routes use preference and table numbers from [`TABLE_LOCAL`] on, and marks from
//! [`MARK_LOCAL`] on; the nftables table is `inet proxyfleet_return`. They are installed
//! again (replacing what was there) by every agent that starts, and left in place when it
//! stops: its instances keep serving other hosts' nodes meanwhile.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::commands::{ip, nft};
use tokio_util::sync::CancellationToken;

/// The routing table (and rule preference) of replies delivered here; host `i`'s is one more
/// than this plus `i`.
pub const TABLE_LOCAL: u32 = 7066;
/// The mark of replies delivered here; host `i`'s is one more than this plus `i`.
pub const MARK_LOCAL: u32 = 0x7066_0000;
const NFT_TABLE: &str = "proxyfleet_return";
/// How often the MACs of the other hosts are read from the neighbour table.
const NEIGHBOURS_EVERY: Duration = Duration::from_secs(1);

/// Another host of the tier: its address and the mark (and table) its replies go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherHost {
    pub address: Ipv4Addr,
    pub index: u32,
}

impl OtherHost {
    fn mark(&self) -> u32 {
        MARK_LOCAL + 1 + self.index
    }
    fn table(&self) -> u32 {
        TABLE_LOCAL + 1 + self.index
    }
}

/// Installs the rules, routes and nftables table (see the module's overview) for a host
/// whose own addresses are `own` (the host's and every address a host of the tier has) and
/// whose fellow hosts are `others`, on `interface`. Must be called in the interface's
/// network namespace.
pub async fn install(interface: &str, hosts: &[Ipv4Addr], others: &[OtherHost]) -> io::Result<()> {
    let mut rules = vec![(MARK_LOCAL, TABLE_LOCAL)];
    rules.extend(others.iter().map(|o| (o.mark(), o.table())));
    for (mark, table) in &rules {
        // Replaced, not added twice: whatever an earlier agent left at this preference goes.
        while ip(&["-4", "rule", "del", "pref", &table.to_string()])
            .await
            .is_ok()
        {}
        ip(&[
            "-4",
            "rule",
            "add",
            "pref",
            &table.to_string(),
            "fwmark",
            &format!("{mark:#x}"),
            "lookup",
            &table.to_string(),
        ])
        .await?;
    }
    ip(&[
        "-4",
        "route",
        "replace",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        &TABLE_LOCAL.to_string(),
    ])
    .await?;
    for o in others {
        ip(&[
            "-4",
            "route",
            "replace",
            "default",
            "via",
            &o.address.to_string(),
            "dev",
            interface,
            "table",
            &o.table().to_string(),
        ])
        .await?;
    }
    nft(&ruleset(hosts)).await
}

/// The nftables half (see the module's overview); `hosts`: every host's own address.
fn ruleset(hosts: &[Ipv4Addr]) -> String {
    let hosts = hosts
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!(
        "\tmap node_hosts {{ type ether_addr : mark; }}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tmeta l4proto tcp socket transparent 1 meta mark set {MARK_LOCAL:#x} accept\n\
         \t\tmeta l4proto tcp ct state new fib daddr type local ip saddr != {{ {hosts} }} ct mark set ether saddr map @node_hosts\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype route hook output priority mangle; policy accept;\n\
         \t\tmeta l4proto tcp ct state new fib saddr type != local ct mark set {MARK_LOCAL:#x}\n\
         \t\tct direction reply ct mark and 0xffff0000 == {MARK_LOCAL:#x} meta mark set ct mark\n\
         \t}}\n"
    );
    crate::commands::replace_table("inet", NFT_TABLE, &body)
}

/// Keeps the map from the other hosts' MACs to their marks current, from the neighbour
/// table (the hosts talk to one another all the time — etcd — so their entries are there),
/// until `stop`.
pub async fn follow_neighbours(interface: String, others: Vec<OtherHost>, stop: CancellationToken) {
    let mut known: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(NEIGHBOURS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Ok(listing) = ip(&["-4", "neigh", "show", "dev", &interface]).await else {
            continue;
        };
        let macs = neighbour_macs(&listing);
        let now: BTreeMap<Ipv4Addr, String> = others
            .iter()
            .filter_map(|o| Some((o.address, macs.get(&o.address)?.clone())))
            .collect();
        if now == known {
            continue;
        }
        let elements = others
            .iter()
            .filter_map(|o| Some(format!("{} : {:#x}", now.get(&o.address)?, o.mark())))
            .collect::<Vec<_>>()
            .join(", ");
        let mut script = format!("flush map inet {NFT_TABLE} node_hosts\n");
        if !elements.is_empty() {
            script += &format!("add element inet {NFT_TABLE} node_hosts {{ {elements} }}\n");
        }
        match nft(&script).await {
            Ok(()) => {
                tracing::info!(hosts = ?now, "return routing: the other hosts' MACs");
                known = now;
            }
            Err(e) => tracing::warn!(error = %e, "return routing: cannot update the hosts' MACs"),
        }
    }
}

/// `ip -4 neigh show` lines (`198.18.0.2 lladdr 02:00:00:00:00:02 REACHABLE`): each address
/// with a link-layer address (entries being resolved or failed have none).
fn neighbour_macs(listing: &str) -> BTreeMap<Ipv4Addr, String> {
    listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let address = words.next()?.parse().ok()?;
            words.find(|w| *w == "lladdr")?;
            Some((address, words.next()?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_neighbour_table() {
        let listing = "198.18.0.2 lladdr 02:00:00:00:00:02 REACHABLE\n\
                       198.18.0.3 FAILED\n\
                       198.18.20.1 lladdr 0a:1b:2c:3d:4e:5f STALE\n";
        let macs = neighbour_macs(listing);
        assert_eq!(macs.len(), 2);
        assert_eq!(macs[&Ipv4Addr::new(198, 18, 0, 2)], "02:00:00:00:00:02");
    }

    #[test]
    fn marks_only_connections_from_clients_addresses() {
        let rules = ruleset(&[Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)]);
        assert!(rules.contains(
            "ip saddr != { 198.18.0.1, 198.18.0.2 } ct mark set ether saddr map @node_hosts"
        ));
        assert!(rules.contains("socket transparent 1 meta mark set 0x70660000"));
    }
}
