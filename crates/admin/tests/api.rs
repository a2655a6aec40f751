//! The admin API over real HTTP, served over a fake `Control` with fixed data that records
//! every call.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{keys, set, start, Fake, TIMEOUT};
use hyper::Method;
use proxyfleet_admin::client::{self, ClientError, Endpoint};
use proxyfleet_admin::view::StatusView;
use proxyfleet_admin::{serve, ADDR_FILE, SOCKET_FILE, TOKEN_FILE};
use serde_json::{json, Value};
use tokio::sync::Notify;

#[tokio::test]
async fn status_json_has_exactly_the_documented_shape() {
    let r = start().await;
    let resp = r.get("/api/status").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type.starts_with("application/json"),
        "{}",
        resp.content_type
    );
    let v: Value = serde_json::from_slice(&resp.body).unwrap();

    assert_eq!(
        keys(&v),
        set(&["load_balancers", "targets", "instances", "groups"])
    );
    let lb = &v["load_balancers"][0];
    assert_eq!(keys(lb), set(&["name", "cross_zone", "nodes"]));
    assert_eq!(lb["name"], "proxy-lb");
    assert_eq!(lb["cross_zone"], false);
    let node = &lb["nodes"][0];
    assert_eq!(
        keys(node),
        set(&[
            "zone",
            "address",
            "listeners",
            "accepted",
            "active",
            "refused",
            "failed",
            "full"
        ])
    );
    assert_eq!(node["address"], "127.10.1.10");
    assert_eq!(
        node["listeners"],
        json!([{"port": 3128, "target_group": "proxies-tg"}])
    );
    assert_eq!(
        (node["accepted"].as_u64(), node["refused"].as_u64()),
        (Some(10), Some(1))
    );

    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    let t = &targets[0];
    assert_eq!(
        keys(t),
        set(&[
            "id",
            "group",
            "address",
            "zone",
            "health",
            "draining",
            "nodes",
            "active_flows",
            "new_flows",
            "bytes_to_target",
            "bytes_to_client",
            "connect_failures",
            "health_transitions",
            "max_flows",
            "skipped_full",
            "checks_not_run",
        ])
    );
    assert_eq!(t["id"], "127.10.1.11:3128");
    assert_eq!(t["address"], "127.10.1.11");
    assert_eq!(t["group"], "proxies-tg");
    assert_eq!(t["health"], "Healthy");
    assert_eq!(t["bytes_to_client"], 65536);
    assert_eq!(
        (t["max_flows"].as_u64(), t["skipped_full"].as_u64()),
        (Some(8190), Some(5))
    );
    assert_eq!(node["full"], 4);
    assert_eq!(
        keys(&t["nodes"][0]),
        set(&["node", "health", "reason", "for_seconds"])
    );
    assert_eq!(t["nodes"][0]["node"], "proxy-lb/a");
    assert_eq!(t["nodes"][0]["health"], "Healthy");
    let for_seconds = t["nodes"][0]["for_seconds"].as_f64().unwrap();
    assert!((12.0..60.0).contains(&for_seconds), "{for_seconds}");
    assert_eq!(targets[1]["health"], "Unhealthy", "one node says unhealthy");
    assert_eq!(targets[1]["nodes"][1]["health"], "Unhealthy");
    assert_eq!(targets[2]["health"], "Draining");
    assert_eq!(targets[2]["draining"], true);

    let instances = v["instances"].as_array().unwrap();
    let ids: Vec<&str> = instances
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i-1", "i-2"], "Terminated instances are not listed");
    let i = &instances[0];
    assert_eq!(
        keys(i),
        set(&[
            "id",
            "group",
            "zone",
            "address",
            "port",
            "pid",
            "lifecycle",
            "health",
            "reason",
            "uptime_seconds",
            "protected",
            "dir",
        ])
    );
    assert_eq!(i["lifecycle"], "InService");
    assert_eq!(instances[1]["lifecycle"], "Pending");
    assert_eq!(i["health"], "Healthy");
    assert_eq!(i["address"], "127.10.1.11");
    assert_eq!(i["pid"], 4242);
    let uptime = i["uptime_seconds"].as_f64().unwrap();
    assert!((59.0..120.0).contains(&uptime), "{uptime}");

    let g = &v["groups"][0];
    assert_eq!(
        keys(g),
        set(&[
            "name",
            "min",
            "max",
            "desired",
            "zones",
            "backoff_seconds",
            "replacements_held",
            "refresh"
        ])
    );
    assert_eq!(g["backoff_seconds"], Value::Null);
    assert_eq!(g["zones"], json!(["a", "c"]));
    assert_eq!(v["groups"][1]["backoff_seconds"], 4.0);

    // The typed view reads the same JSON back (what the CLI does).
    let typed: StatusView = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(typed.instances.len(), 2);
}

#[tokio::test]
async fn address_and_token_files() {
    let dir = tempfile::tempdir().unwrap();
    // What an earlier run left: a world-readable token must not stay so.
    std::fs::write(dir.path().join(TOKEN_FILE), "old\n").unwrap();
    std::fs::set_permissions(
        dir.path().join(TOKEN_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(dir.path().join(ADDR_FILE), "127.0.0.1:1\n").unwrap();
    let stop = Arc::new(Notify::new());
    let fake = Arc::new(Fake::new(stop.clone()));
    let first = serve(fake.clone(), dir.path(), std::future::pending())
        .await
        .unwrap();
    let token_path = dir.path().join(TOKEN_FILE);
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(token.trim().len(), 64);
    assert!(token.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let addr = std::fs::read_to_string(dir.path().join(ADDR_FILE)).unwrap();
    assert_eq!(addr, format!("{}\n", first.addr));
    let parsed: SocketAddr = addr.trim().parse().unwrap();
    assert!(parsed.ip().is_loopback());
    let socket = dir.path().join(SOCKET_FILE);
    assert_eq!(first.socket.as_ref().unwrap(), &socket);
    // Dropped (what a killed `up` amounts to): its socket file stays behind.
    drop(first);
    assert!(socket.exists());

    // Each start writes a fresh token.
    let second = serve(fake, dir.path(), async move { stop.notified().await })
        .await
        .unwrap();
    let token2 = std::fs::read_to_string(&token_path).unwrap();
    assert_ne!(token, token2);
    assert_eq!(
        second.socket.as_ref().unwrap(),
        &socket,
        "the stale socket replaced"
    );
    let addr2 = second.addr;
    let resp = client::request(
        Endpoint::Unix(socket.clone()),
        Method::GET,
        "/api/status",
        None,
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let resp = client::request(
        addr2,
        Method::POST,
        "/api/down",
        Some(token2.trim()),
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    tokio::time::timeout(TIMEOUT, second.wait()).await.unwrap();
    // A clean stop takes its files along, and the port no longer answers.
    assert!(!dir.path().join(ADDR_FILE).exists());
    assert!(!token_path.exists());
    assert!(!socket.exists());
    let err = client::request(addr2, Method::GET, "/api/status", None, None, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused), "{err}");
}

#[tokio::test]
async fn mutating_calls_need_the_token() {
    let r = start().await;
    let calls = [
        ("/api/groups/proxies/scale", Some(json!({"desired": 3}))),
        ("/api/instances/i-1/terminate", None),
        ("/api/instances/i-1/health", Some(json!({"healthy": false}))),
        ("/api/down", None),
    ];
    for (path, body) in &calls {
        let resp = r.post(path, None, body.clone()).await;
        assert_eq!(resp.status, 401, "{path}");
        assert!(resp.content_type.starts_with("application/json"));
        assert!(
            resp.error_message().contains("Bearer"),
            "{}",
            resp.error_message()
        );
        let resp = r.post(path, Some("0123"), body.clone()).await;
        assert_eq!(resp.status, 401, "{path}");
        let wrong = "f".repeat(64);
        let resp = r.post(path, Some(&wrong), body.clone()).await;
        assert_eq!(resp.status, 401, "{path}");
        assert_eq!(resp.error_message(), "wrong bearer token");
    }
    assert!(r.fake.calls().is_empty(), "{:?}", r.fake.calls());

    for (path, body) in &calls[..3] {
        let resp = r.post_with_token(path, body.clone()).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(
            serde_json::from_slice::<Value>(&resp.body).unwrap(),
            json!({"ok": true})
        );
    }
    let resp = r
        .post_with_token(
            "/api/instances/i-2/terminate",
            Some(json!({"decrement_desired": true})),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        r.fake.calls(),
        [
            "scale proxies 3",
            "terminate i-1 false",
            "health i-1 false",
            "terminate i-2 true",
        ]
    );
}

#[tokio::test]
async fn refusals_and_bad_bodies_are_json_errors() {
    let r = start().await;
    let cases = [
        (
            "/api/groups/nope/scale",
            Some(json!({"desired": 1})),
            404,
            "no group 'nope'",
        ),
        (
            "/api/groups/proxies/scale",
            Some(json!({"desired": 9})),
            400,
            "group proxies: desired 9 is outside min 1 .. max 4",
        ),
        (
            "/api/instances/x-9/terminate",
            None,
            404,
            "no live instance 'x-9'",
        ),
        (
            "/api/groups/proxies/scale",
            Some(json!({"desired": -1})),
            400,
            "bad request body",
        ),
        ("/api/groups/proxies/scale", None, 400, "bad request body"),
        (
            "/api/groups/proxies/scale",
            Some(json!({"desired": 1, "x": 1})),
            400,
            "unknown field",
        ),
        (
            "/api/instances/i-1/health",
            Some(json!({})),
            400,
            "missing field `healthy`",
        ),
    ];
    for (path, body, status, message) in cases {
        let resp = r.post_with_token(path, body).await;
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
        assert!(
            resp.error_message().contains(message),
            "{path}: {} does not contain {message}",
            resp.error_message()
        );
    }
    let resp = r.get("/api/nothing").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.error_message(), "no such route");
    let resp = r.get("/api/activity?limit=many").await;
    assert_eq!(resp.status, 400);
}

#[tokio::test]
async fn activity_passes_group_and_limit() {
    let r = start().await;
    let all: Value = serde_json::from_slice(&r.get("/api/activity").await.body).unwrap();
    let ids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2, 1], "newest first");
    assert_eq!(
        keys(&all[0]),
        set(&[
            "id",
            "group",
            "description",
            "cause",
            "status",
            "start",
            "end"
        ])
    );
    assert_eq!(all[0]["status"], "InProgress");
    assert_eq!(all[0]["end"], Value::Null);
    assert_eq!(all[1]["status"], "Failed");

    let some: Value =
        serde_json::from_slice(&r.get("/api/activity?group=proxies&limit=1").await.body).unwrap();
    assert_eq!(some.as_array().unwrap().len(), 1);
    assert_eq!(some[0]["id"], 3);
    let _ = r.get("/api/activity?limit=99999999").await;
    assert_eq!(
        r.fake.calls(),
        [
            "activities None 100",
            "activities Some(\"proxies\") 1",
            "activities None 10000",
        ]
    );
}

#[tokio::test]
async fn stack_is_yaml_text_behind_the_token_with_environment_values_redacted() {
    let r = start().await;
    let resp = r.get("/api/stack").await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(!resp.text().contains(common::SECRET));
    let resp = r.get_with_token("/api/stack").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type.starts_with("text/yaml"),
        "{}",
        resp.content_type
    );
    // The file as written (comments too), only the values replaced; names are kept.
    let want = common::STACK_TEXT
        .replace("hunter2-db-password", "<redacted>")
        .replace("\"eu-west-1\"", "<redacted>");
    assert_eq!(resp.text(), want);
    assert!(!resp.text().contains(common::SECRET));
}

#[tokio::test]
async fn down_stops_the_server_after_answering() {
    let r = start().await;
    let resp = r.post_with_token("/api/down", None).await;
    assert_eq!(resp.status, 200);
    assert_eq!(r.fake.calls(), ["shutdown"]);
    let addr = r.admin.addr;
    tokio::time::timeout(TIMEOUT, r.admin.wait()).await.unwrap();
    assert!(!r.dir.path().join(ADDR_FILE).exists());
    let err = client::request(addr, Method::GET, "/api/status", None, None, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused), "{err}");
}

#[tokio::test]
async fn metrics_name_every_target_node_instance_and_group() {
    let r = start().await;
    let resp = r.get("/metrics").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        resp.content_type
    );
    let text = resp.text();
    let expect = [
        "# TYPE proxyfleet_target_new_flows_total counter",
        r#"proxyfleet_target_new_flows_total{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 120"#,
        r#"proxyfleet_target_active_flows{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 3"#,
        r#"proxyfleet_target_sent_bytes_total{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 4096"#,
        r#"proxyfleet_target_received_bytes_total{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 65536"#,
        r#"proxyfleet_target_connect_failures_total{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 1"#,
        r#"proxyfleet_target_health_transitions_total{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 2"#,
        r#"proxyfleet_target_healthy{group="proxies-tg",target="127.10.2.11:3128",zone="c",node="proxy-lb/a"} 1"#,
        r#"proxyfleet_target_healthy{group="proxies-tg",target="127.10.2.11:3128",zone="c",node="proxy-lb/c"} 0"#,
        r#"proxyfleet_lb_node_accepted_connections_total{load_balancer="proxy-lb",zone="a"} 10"#,
        r#"proxyfleet_lb_node_refused_connections_total{load_balancer="proxy-lb",zone="c"} 1"#,
        r#"proxyfleet_lb_node_failed_connections_total{load_balancer="proxy-lb",zone="a"} 0"#,
        r#"proxyfleet_lb_node_full_connections_total{load_balancer="proxy-lb",zone="a"} 4"#,
        r#"proxyfleet_target_max_flows{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 8190"#,
        r#"proxyfleet_target_skipped_full_total{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 5"#,
        r#"proxyfleet_target_checks_not_run_total{group="proxies-tg",target="127.10.1.11:3128",zone="a"} 0"#,
        r#"proxyfleet_lb_node_active_connections{load_balancer="proxy-lb",zone="a"} 2"#,
        r#"proxyfleet_instance_up{group="proxies",instance="i-1",zone="a",lifecycle="InService"} 1"#,
        r#"proxyfleet_instance_up{group="proxies",instance="i-2",zone="c",lifecycle="Pending"} 1"#,
        r#"proxyfleet_group_desired_instances{group="proxies"} 2"#,
        r#"proxyfleet_group_min_instances{group="proxies"} 1"#,
        r#"proxyfleet_group_max_instances{group="proxies"} 4"#,
        r#"proxyfleet_group_in_service_instances{group="proxies"} 1"#,
        r#"proxyfleet_group_in_service_instances{group="broken"} 0"#,
        r#"proxyfleet_activities{group="broken",status="Failed"} 1"#,
        r#"proxyfleet_activities{group="proxies",status="InProgress"} 1"#,
    ];
    for line in expect {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line} in:\n{text}"
        );
    }
    assert!(
        !text.contains("i-0"),
        "Terminated instances are not reported"
    );
    promtool_check(&text);
}

/// `promtool check metrics` (Debian's `prometheus` package) lints the exposition.
fn promtool_check(text: &str) {
    let Some(promtool) = find_promtool() else {
        println!("SKIPPED: promtool not found (apt-get install prometheus)");
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {report}\n{text}"
    );
    assert!(report.trim().is_empty(), "promtool check metrics: {report}");
}

fn find_promtool() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| Path::new(p).is_file())
}
