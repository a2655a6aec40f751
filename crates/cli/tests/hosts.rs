//! The tier across hosts: three hosts as network namespaces on one segment (each its own
//! etcd member and `proxyfleet agent`), clients in an app namespace making new connections
//! with 200 ms connect timeouts through the DNS name and through each node address, the
//! origin in a service namespace (`common::hosts`). Each drill prints `hosts N: ...` lines
//! with what it measured; the README's table is made of them. Without root or etcd the
//! drills print `SKIPPED: ...` and why. They run one at a time (each starts a dozen
//! processes and times failovers in hundreds of milliseconds on two cores).

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::hosts::{self, holder, node_address, serving_in, Hosts, HOSTS, ZONES};
use common::tier::{leader, live};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn skip() -> bool {
    if let Some(why) = hosts::unavailable() {
        println!("SKIPPED: {why}");
        return true;
    }
    false
}

/// The client address field of a Squid-format access-log line.
fn logged_client(line: &str) -> Option<&str> {
    line.split_whitespace().nth(2)
}

#[test]
fn hosts_1_every_node_reaches_the_service_from_instances_on_two_hosts() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if skip() {
        return;
    }
    let tier = Hosts::start(3);
    let s = tier.status();
    let on_hosts: BTreeSet<String> = live(&s)
        .iter()
        .filter_map(|i| i["host"].as_str().map(str::to_string))
        .collect();
    assert!(
        on_hosts.len() >= 2,
        "instances on two hosts at least: {s:#}"
    );
    // Requests through every node, from each client address, and through the DNS name.
    let url = tier.url();
    let mut through = Vec::new();
    for i in 0..3 {
        let node = node_address(i);
        for n in 0..4 {
            let source = hosts::client_address(n).to_string();
            let reply = tier.from_app(|| {
                testkit::client::exchange_raw(
                    &source,
                    node,
                    format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
            });
            assert!(
                reply.starts_with("HTTP/1.1 200"),
                "through {node} from {source}: {reply}"
            );
        }
        through.push(node.to_string());
    }
    let answer = tier.dns_answer().expect("the DNS name answers");
    let mut answer_sorted = answer.clone();
    answer_sorted.sort();
    let nodes: Vec<std::net::Ipv4Addr> = (0..3)
        .map(|i| match node_address(i).ip() {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        answer_sorted, nodes,
        "every zone is healthy: every node in the answer"
    );
    // Which instances served: the origin saw requests from instances on two hosts at least.
    let seen: BTreeSet<String> = tier
        .origin
        .seen()
        .iter()
        .map(|r| r.peer.ip().to_string())
        .collect();
    // An instance's request leaves from its own address or from its host's primary one.
    let instance_hosts: BTreeSet<String> = seen
        .iter()
        .filter_map(|peer| {
            (0..3)
                .find(|&i| hosts::host_address(i).to_string() == *peer)
                .map(|i| HOSTS[i].to_string())
                .or_else(|| {
                    live(&s)
                        .iter()
                        .find(|i| {
                            i["address"]
                                .as_str()
                                .is_some_and(|a| a.split(':').next() == Some(peer.as_str()))
                        })
                        .and_then(|i| i["host"].as_str().map(str::to_string))
                })
        })
        .collect();
    // The access logs show the clients' own addresses (PROXY v2 from the nodes).
    let lines = tier.access_log_lines();
    let clients: BTreeSet<&str> = lines.iter().filter_map(|l| logged_client(l)).collect();
    println!(
        "hosts 1: 12 requests through the 3 nodes ({}) all 200; served by instances on {:?}; DNS answer {:?}; access logs name clients {:?}",
        through.join(", "),
        instance_hosts,
        answer,
        clients
    );
    assert!(
        instance_hosts.len() >= 2,
        "instances on two hosts served: {seen:?} {s:#}"
    );
    for n in 0..4 {
        let c = hosts::client_address(n).to_string();
        assert!(
            clients.contains(c.as_str()),
            "{c} in the access logs: {lines:#?}"
        );
    }
    assert!(
        clients.iter().all(|c| c.starts_with("198.18.20.")),
        "only client addresses, never a node's: {clients:?}"
    );
}
