//! Segments of the old holder's connections, passed back to it during a planned move.
//!
//! When a node address moves make-before-break, the clients' ARP entries flip to the new
//! holder at its gratuitous ARP; a connection the old holder accepted just before goes on
//! sending to the address, now to the new holder, which has no socket for it and would
//! answer with a reset. So for the hand-over, the new holder passes every segment for the
//! node's ports that does not belong to a connection it saw open itself (its SYN went by
//! here) on to the old holder, which still has the address and the connection's socket
//! while it drains: an nftables `netdev` ingress chain on the interface, with a set of the
//! connections that opened here (source address and port, learnt from their SYNs), and
//! `fwd ip to OLD_HOLDER`. It goes once the old holder's drain is over ([`PASS_FOR`]).
//!
//! Only for a planned move: after a host is lost there is nobody to pass segments to. A
//! table left by an agent that died mid-hand-over is removed when the next one starts
//! ([`remove_stale`]).

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::process::Command;

use crate::commands::nft;

/// How long segments are passed on: the old holder serves 0.2 s after hearing the new
/// holder's announcement and drains for at most 0.4 s more; the rest is margin for a loaded
/// host.
pub const PASS_FOR: Duration = Duration::from_secs(2);

/// Tables of this module are named with this prefix (and the node address).
const TABLE_PREFIX: &str = "proxyfleet_handover_";

fn table_name(node: Ipv4Addr) -> String {
    format!("{TABLE_PREFIX}{}", node.to_string().replace('.', "_"))
}

/// The ruleset that passes `node`'s stray segments on `ports` to `old_holder`.
fn ruleset(interface: &str, node: Ipv4Addr, ports: &[u16], old_holder: Ipv4Addr) -> String {
    let table = table_name(node);
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!(
        "\tset opened_here {{ type ipv4_addr . inet_service; flags dynamic, timeout; timeout 1m; size 65536; }}\n\
         \tchain ingress {{\n\
         \t\ttype filter hook ingress device \"{interface}\" priority 0; policy accept;\n\
         \t\tip daddr {node} tcp dport {{ {ports} }} tcp flags & (syn | ack) == syn update @opened_here {{ ip saddr . tcp sport }} accept\n\
         \t\tip daddr {node} tcp dport {{ {ports} }} ip saddr . tcp sport @opened_here accept\n\
         \t\tip daddr {node} tcp dport {{ {ports} }} fwd ip to {old_holder} device \"{interface}\"\n\
         \t}}\n"
    );
    crate::commands::replace_table("netdev", &table, &body)
}

/// Starts passing `node`'s stray segments on `ports` to `old_holder` (see the module's
/// overview), and stops after [`PASS_FOR`] in a spawned task. Must be called within a Tokio
/// runtime, in the interface's network namespace.
pub async fn pass_to_old_holder(
    interface: &str,
    node: Ipv4Addr,
    ports: &[u16],
    old_holder: Ipv4Addr,
) -> io::Result<()> {
    // Each installation's generation: a later hand-over of the same node replaces the
    // table, and the earlier one's timer must then leave it alone.
    let generation = {
        let mut generations = GENERATIONS.lock().unwrap_or_else(|p| p.into_inner());
        let g = generations.entry(node).or_insert(0);
        *g += 1;
        *g
    };
    nft(&ruleset(interface, node, ports, old_holder)).await?;
    tokio::spawn(async move {
        tokio::time::sleep(PASS_FOR).await;
        let current = GENERATIONS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .copied();
        if current != Some(generation) {
            return;
        }
        if let Err(e) = remove(node).await {
            tracing::warn!(error = %e, %node, "cannot remove the hand-over's nftables table");
        }
    });
    Ok(())
}

/// The latest installation's generation, by node address (see `pass_to_old_holder`).
static GENERATIONS: std::sync::Mutex<std::collections::BTreeMap<Ipv4Addr, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

async fn remove(node: Ipv4Addr) -> io::Result<()> {
    nft(&crate::commands::delete_table("netdev", &table_name(node))).await
}

/// Removes every hand-over table of this module (an agent that died mid-hand-over left it).
pub async fn remove_stale() -> io::Result<()> {
    let output = Command::new("nft")
        .args(["list", "tables", "netdev"])
        .kill_on_drop(true)
        .output()
        .await?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let stale: String = listing
        .lines()
        .filter_map(|l| l.strip_prefix("table netdev "))
        .filter(|t| t.starts_with(TABLE_PREFIX))
        .map(|t| format!("delete table netdev {t}\n"))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    nft(&stale).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_passes_only_segments_of_connections_not_opened_here() {
        let rules = ruleset(
            "eth0",
            Ipv4Addr::new(198, 18, 1, 10),
            &[3128, 8080],
            Ipv4Addr::new(198, 18, 0, 2),
        );
        assert!(rules.starts_with(
            "add table netdev proxyfleet_handover_198_18_1_10\ndelete table netdev proxyfleet_handover_198_18_1_10\n"
        ));
        assert!(rules.contains("hook ingress device \"eth0\""));
        assert!(rules.contains(
            "tcp dport { 3128, 8080 } tcp flags & (syn | ack) == syn update @opened_here"
        ));
        assert!(rules.contains("fwd ip to 198.18.0.2 device \"eth0\""));
    }
}
