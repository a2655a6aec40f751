//! A quiet tier on etcd: nothing written for longer than the compaction retention, while other
//! keys moved etcd's revision on, so compaction passes the revision of the last batch. A role
//! that starts (or restarts its watch) then must still follow the state, and the history must
//! still read, instead of retrying a compacted watch forever. A real 3-member cluster on
//! 127.99.206.x; without etcd: `SKIPPED`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_state::model::Host;
use proxyfleet_state::{Change, EtcdStore, Fence, StateStore, UnixMillis};
use testkit::etcd::Cluster;
use tokio_util::sync::CancellationToken;

fn host(id: &str) -> Change {
    Change::RegisterHost {
        host: Host {
            id: id.into(),
            address: "127.0.0.1".parse().unwrap(),
            zone: "a".into(),
            last_heartbeat: UnixMillis::now(),
            nodes: Default::default(),
        },
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One v3 JSON-gateway call on member 0; the answer's text.
fn call(cluster: &Cluster, path: &str, body: &str) -> String {
    let url = format!("{}{path}", cluster.client_url(0));
    let curl = testkit::client::curl(&["-s", "-m", "5", "-d", body, &url]);
    assert!(curl.success, "{path}: {}", curl.stderr);
    curl.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_follows_a_quiet_tier_whose_log_was_compacted_past_its_last_batch() {
    if !testkit::etcd::installed() {
        println!("SKIPPED: etcd not installed (scripts/test installs Debian's etcd-server)");
        return;
    }
    let cluster = Cluster::start([206, 1]);
    let endpoints: Vec<SocketAddr> = cluster
        .client_urls()
        .iter()
        .map(|u| u.trim_start_matches("http://").parse().unwrap())
        .collect();
    let store: Arc<dyn StateStore> = Arc::new(EtcdStore::new(endpoints, "/quiet/"));
    let last_batch = store
        .apply(Fence::Unfenced, vec![host("h1")])
        .await
        .unwrap();
    // Other keys move etcd on (liveness keys, leases lapsing do in a real tier), then
    // compaction passes the last batch's revision.
    for i in 0..3 {
        call(
            &cluster,
            "/v3/kv/put",
            &format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                b64("/other/key"),
                b64(&i.to_string())
            ),
        );
    }
    let head = call(
        &cluster,
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, b64("/other/key")),
    );
    let head: u64 = serde_json::from_str::<serde_json::Value>(&head).unwrap()["header"]["revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        head > last_batch.0 + 1,
        "head {head}, last batch {last_batch}"
    );
    call(
        &cluster,
        "/v3/kv/compaction",
        &format!(r#"{{"revision":"{head}","physical":true}}"#),
    );

    let stop = CancellationToken::new();
    let mut view = proxyfleet_roles::view::follow(store.clone(), stop.clone());
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if view.borrow_and_update().connected {
                return;
            }
            view.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        connected.is_ok(),
        "the view never followed the compacted tier"
    );
    assert!(view.borrow().snapshot.hosts.contains_key("h1"));
    println!("roles: view follows a tier compacted past its last batch (revision {last_batch}, compacted at {head})");

    // The history reads (what is left of it) instead of hanging.
    let lines = tokio::time::timeout(
        Duration::from_secs(5),
        proxyfleet_roles::history::read(&*store, 10),
    )
    .await
    .expect("the history read returns")
    .unwrap();
    assert!(
        lines.is_empty(),
        "the log before the compaction is gone: {lines:?}"
    );

    // And the next batch is seen.
    store
        .apply(Fence::Unfenced, vec![host("h2")])
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if view.borrow_and_update().snapshot.hosts.contains_key("h2") {
                return;
            }
            view.changed().await.unwrap();
        }
    })
    .await;
    assert!(seen.is_ok(), "the view did not see the next batch");
    stop.cancel();
}
