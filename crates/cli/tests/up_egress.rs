//! Issue 11 on a running tier (`proxyfleet up`, real instances, real balancer): through every
//! node, an application client cannot reach the admin API, a service on the proxy host's
//! loopback, or the tier's own nodes and instances (no chained tunnels); the declared service
//! networks stay reachable; and each refusal is in the instance's access log as TCP_DENIED/403.

mod common;

use std::time::Duration;

use common::up::{proxy_stack, Up};
use testkit::client::exchange_raw;
use testkit::origin::Origin;

const CLIENT: &str = "127.20.0.9";

fn request(node: &str, head: &str) -> String {
    exchange_raw(CLIENT, node.parse().unwrap(), head.as_bytes())
}

fn get(node: &str, url: &str) -> String {
    request(
        node,
        &format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

fn connect(node: &str, authority: &str) -> String {
    request(
        node,
        &format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
    )
}

/// Every line of every instance's access log.
fn access_logs(up: &Up) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(dirs) = std::fs::read_dir(up.dir().join("instances")) else {
        return lines;
    };
    for entry in dirs.flatten() {
        let text = std::fs::read_to_string(entry.path().join("access.log")).unwrap_or_default();
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

fn denied(reply: &str) -> bool {
    reply.starts_with("HTTP/1.1 403 Forbidden\r\n") && reply.contains("ERR_ACCESS_DENIED")
}

#[test]
fn through_every_node_the_tier_and_its_host_are_out_of_reach() {
    // Net 86; a second service network, declared, and a loopback network that is not.
    let stack = proxy_stack(86, 2, 2, 2)
        .replace(
            "service_networks: [service]",
            "service_networks: [service, 127.31.0.0/16]",
        )
        .replace(
            "        access_log none\n",
            "        access_log {dir}/access.log squid\n",
        );
    let up = Up::start(Some(&stack));
    testkit::wait::until_true("2 healthy targets", Duration::from_secs(20), || {
        up.healthy_targets() == 2
    });
    let service = Origin::start("127.30.0.86");
    let declared = Origin::start("127.31.0.86");
    let undeclared = Origin::start("127.32.0.86");
    let host_service = Origin::start("127.0.0.1");
    let admin = std::fs::read_to_string(up.dir().join("admin.addr")).unwrap();
    let admin = admin.trim().trim_start_matches("http://").to_string();
    let nodes = ["127.86.1.10:3128", "127.86.2.10:3128"];
    let instances = ["127.86.1.11:3128", "127.86.2.11:3128"];

    let mut refusals = 0;
    for node in nodes {
        for origin in [&service, &declared] {
            let reply = get(node, &format!("{}/small", origin.url()));
            assert!(
                reply.starts_with("HTTP/1.1 200 OK\r\n"),
                "{node} -> {}: {reply}",
                origin.url()
            );
        }
        let mut must_refuse = vec![
            format!("http://{admin}/api/status"),
            format!("http://{admin}/api/stack"),
            format!("{}/small", undeclared.url()),
            format!("{}/small", host_service.url()),
            format!("http://127.1:{}/small", host_service.addr.port()),
        ];
        for target in nodes.iter().chain(&instances) {
            must_refuse.push(format!("http://{target}/healthz"));
        }
        for url in &must_refuse {
            let reply = get(node, url);
            assert!(denied(&reply), "{node} -> {url}: {reply}");
            refusals += 1;
        }
        // No chained tunnels: CONNECT to a node, an instance, the admin API, the host.
        for authority in nodes
            .iter()
            .chain(&instances)
            .map(|s| s.to_string())
            .chain([admin.clone(), host_service.addr.to_string()])
        {
            let reply = connect(node, &authority);
            assert!(denied(&reply), "{node} CONNECT {authority}: {reply}");
            refusals += 1;
        }
    }
    assert!(host_service.seen().is_empty(), "{:?}", host_service.seen());
    assert!(undeclared.seen().is_empty(), "{:?}", undeclared.seen());

    // Every refusal is an access log line of the instance that made it, with the client.
    let logged = testkit::wait::until(
        "the refusals in the access logs",
        Duration::from_secs(10),
        || {
            let denied: Vec<String> = access_logs(&up)
                .into_iter()
                .filter(|l| l.contains(" TCP_DENIED/403 ") && l.contains(CLIENT))
                .collect();
            (denied.len() >= refusals).then_some(denied)
        },
    );
    assert_eq!(logged.len(), refusals, "{logged:#?}");
    assert!(
        logged.iter().any(|l| l.contains("/api/status")),
        "{logged:#?}"
    );
}

#[test]
fn a_clients_own_proxy_header_is_never_taken_for_the_balancers() {
    let stack = proxy_stack(87, 2, 2, 2)
        .replace(
            "    protocol: tcp\n    port: 3128\n",
            // The cloud's IP-target behaviour: the client's address travels in the header.
            "    protocol: tcp\n    port: 3128\n    proxy_protocol_v2: true\n    \
             preserve_client_ip: false\n",
        )
        .replace(
            "        http_port {address}:{port}\n",
            "        http_port {address}:{port} require-proxy-header\n        \
             acl lbs src 127.87.1.10 127.87.2.10\n        proxy_protocol_access allow lbs\n",
        )
        .replace(
            "        access_log none\n",
            "        access_log {dir}/access.log squid\n",
        );
    let up = Up::start(Some(&stack));
    testkit::wait::until_true("2 healthy targets", Duration::from_secs(20), || {
        up.healthy_targets() == 2
    });
    let service = Origin::start("127.30.0.85");
    let url = format!("{}/small", service.url());
    let spoofs: [&[u8]; 2] = [
        b"PROXY TCP4 6.6.6.6 127.87.1.11 1111 3128\r\n",
        // The v2 signature, a PROXY TCP4 header claiming 6.6.6.6.
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x06\x06\x06\x06\x7f\x55\x01\x0b\x04\x57\x0c\x38",
    ];
    for node in ["127.87.1.10:3128", "127.87.2.10:3128"] {
        let reply = get(node, &url);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{node}: {reply}");
        for spoof in spoofs {
            let mut bytes = spoof.to_vec();
            bytes.extend_from_slice(
                format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            let reply = exchange_raw(CLIENT, node.parse().unwrap(), &bytes);
            assert!(
                reply.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{node}: a second PROXY header is a malformed request: {reply}"
            );
        }
    }
    assert_eq!(service.seen().len(), 2, "only the two honest requests");
    let lines = testkit::wait::until("six access log lines", Duration::from_secs(10), || {
        let lines = access_logs(&up);
        (lines.len() >= 6).then_some(lines)
    });
    assert!(
        lines
            .iter()
            .all(|l| l.contains(CLIENT) && !l.contains("6.6.6.6")),
        "every line names the real client: {lines:#?}"
    );
}
