//! The roles on one shared store, in this test's process: two agents (zone a and zone c),
//! both candidates for the controller, on the embedded SQLite store, running real
//! `proxyfleet proxy` instances behind their zones' nodes. The multi-process suite on etcd
//! builds on the same roles. Addresses: 127.100.0.0/16 (the zones), clients from the app
//! network 127.20.100.x, the origin on 127.30.100.1.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::up::proxy_stack;
use common::BIN;
use proxyfleet_roles::decide::Timings;
use proxyfleet_roles::{Agent, AgentConfig};
use proxyfleet_state::{Cause, Lifecycle, Snapshot, SqliteStore, StateStore, TargetHealth};

fn config(
    host: &str,
    zone: &str,
    stack: &proxyfleet_stack::Stack,
    dir: &std::path::Path,
) -> AgentConfig {
    AgentConfig {
        host: host.into(),
        zone: zone.into(),
        address: "127.0.0.1".parse().unwrap(),
        stack: stack.clone(),
        live_stack: None,
        state_dir: dir.join(host),
        self_exe: BIN.into(),
        controller: true,
        lease: Duration::from_secs(1),
        timings: Timings::default(),
        budget: proxyfleet_lb::ProcessBudget::new(Default::default()),
        launcher: None,
        when_isolated: Default::default(),
    }
}

async fn snapshot(store: &dyn StateStore) -> Snapshot {
    store.snapshot().await.unwrap().0
}

/// Polls the store until `probe` says yes; returns how long it took.
async fn until(
    store: &dyn StateStore,
    what: &str,
    limit: Duration,
    probe: impl Fn(&Snapshot) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let s = snapshot(store).await;
        if probe(&s) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; state: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// In-service instances of a zone whose target every node finds healthy.
fn serving(s: &Snapshot, zone: &str) -> Vec<String> {
    s.instances
        .values()
        .filter(|i| i.zone == zone && i.lifecycle == Lifecycle::InService)
        .filter(|i| {
            s.target("tg", i.target_address())
                .is_some_and(|t| t.state == TargetHealth::Healthy)
        })
        .map(|i| i.id.clone())
        .collect()
}

/// Kills every instance process the state knows of (they are this test's children).
/// Kills the instances the store knows of and removes the agents' firewall tables.
struct Reaper(Arc<SqliteStore>, std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let store = self.0.clone();
        let pids = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { snapshot(&*store).await })
                .instances
                .values()
                .filter_map(|i| i.process.map(|p| p.pid))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap_or_default();
        for pid in pids {
            // SAFETY: kill(2) and waitpid(2) on pids of this test's own children.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
        testkit::firewall::remove_tables_under(&self.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_run_the_tier_replace_a_dead_instance_and_survive_a_lost_host() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let stack = proxyfleet_stack::parse(
        &proxy_stack(100, 2, 2, 4),
        std::path::Path::new("roles.yaml"),
    )
    .unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let _reaper = Reaper(store.clone(), dir.path().to_path_buf());
    // The origin runs its own runtime: started off this one's threads.
    let origin = std::thread::spawn(|| testkit::origin::Origin::start("127.30.100.1"))
        .join()
        .unwrap();

    let shared: Arc<dyn StateStore> = store.clone();
    let a = Agent::start(config("ha", "a", &stack, dir.path()), shared.clone())
        .await
        .unwrap();
    let c = Agent::start(config("hc", "c", &stack, dir.path()), shared.clone())
        .await
        .unwrap();
    let took = until(
        &*store,
        "one serving instance per zone",
        Duration::from_secs(20),
        |s| serving(s, "a").len() == 1 && serving(s, "c").len() == 1,
    )
    .await;
    println!("roles: both zones serving after {} ms", took.as_millis());
    for (i, node) in ["127.100.1.10", "127.100.2.10"].iter().enumerate() {
        let code = tokio::task::block_in_place(|| {
            common::get_through(node, &origin, &format!("127.20.100.{}", i + 1))
        });
        assert_eq!(code, 200, "through node {node}");
    }

    // kill -9 zone c's instance: the controller replaces it in zone c.
    let s = snapshot(&*store).await;
    let victim = s
        .instances
        .values()
        .find(|i| i.zone == "c")
        .unwrap()
        .clone();
    // SAFETY: kill(2) on a pid this test's agent launched.
    unsafe { libc::kill(victim.process.unwrap().pid as i32, libc::SIGKILL) };
    let took = until(
        &*store,
        "a replacement serving in zone c",
        Duration::from_secs(10),
        |s| {
            serving(s, "c").iter().any(|id| *id != victim.id)
                && s.instances
                    .get(&victim.id)
                    .is_none_or(|i| i.lifecycle >= Lifecycle::Terminating)
        },
    )
    .await;
    let s = snapshot(&*store).await;
    if let Some(old) = s.instances.get(&victim.id) {
        assert!(
            matches!(old.reason, Some(Cause::ProcessExited { .. })),
            "{:?}",
            old.reason
        );
    }
    println!(
        "roles: kill -9 of {}: a replacement served after {} ms",
        victim.id,
        took.as_millis()
    );

    // Host a is lost (its agent stops: no heartbeat, no node): its instance is written off and
    // replaced in zone c, the only zone with a live host; the leadership, wherever it was,
    // is held by the survivor.
    let lost = s
        .instances
        .values()
        .find(|i| i.zone == "a" && i.lifecycle == Lifecycle::InService)
        .unwrap()
        .clone();
    a.shutdown().await;
    let took = until(
        &*store,
        "host a's instance written off and replaced",
        Duration::from_secs(10),
        |s| {
            s.instances
                .get(&lost.id)
                .is_none_or(|i| i.lifecycle == Lifecycle::Terminated)
                && serving(s, "c").len() == 2
        },
    )
    .await;
    let s = snapshot(&*store).await;
    if let Some(old) = s.instances.get(&lost.id) {
        assert_eq!(old.reason, Some(Cause::HostLost { host: "ha".into() }));
    }
    println!(
        "roles: host a lost: its instance replaced in zone c after {} ms",
        took.as_millis()
    );
    let leader = store.leader().await.unwrap().expect("a live leader");
    assert_eq!(leader.leader, "hc");
    let code = tokio::task::block_in_place(|| {
        common::get_through("127.100.2.10", &origin, "127.20.100.9")
    });
    assert_eq!(
        code, 200,
        "zone c's node serves with both instances in zone c"
    );
    // Zone a has no live host: host c stands in for zone a's node, on its address.
    let start = Instant::now();
    loop {
        let code = tokio::task::block_in_place(|| {
            common::get_through("127.100.1.10", &origin, "127.20.100.10")
        });
        if code == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "zone a's node address never served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c
        .nodes
        .listen_addrs()
        .iter()
        .any(|(_, zone, _)| zone == "a"));
    println!("roles: zone a's node address served again from host c");
    // The history is the store's log: launches, the kill's termination and the host loss,
    // each with its cause, across both leaders.
    let history = proxyfleet_roles::history::read(&*store, 1000)
        .await
        .unwrap();
    let text: Vec<String> = history
        .iter()
        .map(|a| format!("{} | {}", a.description, a.cause))
        .collect();
    let has = |needle: &str| text.iter().any(|l| l.contains(needle));
    assert!(has("Launching a new instance"), "{text:#?}");
    assert!(
        has(&format!("Terminating instance {}", victim.id)),
        "{text:#?}"
    );
    assert!(has("Controller elected: "), "{text:#?}");
    assert!(
        text.iter()
            .any(|l| l.starts_with(&format!("Instance {} terminated", lost.id))),
        "{text:#?}"
    );
    println!(
        "roles: {} lines of history:\n  {}",
        text.len(),
        text.join("\n  ")
    );

    // Host a returns: its written-off instance, still running there, is stopped (not adopted
    // again), and zone a's node goes back to it.
    let stale = lost.process.expect("it ran").pid;
    let returned = Instant::now();
    let a = Agent::start(config("ha", "a", &stack, dir.path()), shared.clone())
        .await
        .unwrap();
    while !is_gone(stale) {
        assert!(
            returned.elapsed() < Duration::from_secs(10),
            "the stale instance {stale} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = returned.elapsed();
    while !a
        .nodes
        .listen_addrs()
        .iter()
        .any(|(_, zone, _)| zone == "a")
    {
        assert!(
            returned.elapsed() < Duration::from_secs(10),
            "zone a's node never came back to host a"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!c
        .nodes
        .listen_addrs()
        .iter()
        .any(|(_, zone, _)| zone == "a"));
    println!(
        "roles: host a back: its stale instance stopped after {} ms, its node back after {} ms",
        stopped.as_millis(),
        returned.elapsed().as_millis()
    );
    a.shutdown().await;
    c.shutdown().await;
}

/// Gone, or a zombie (exited; our own child, not yet reaped).
fn is_gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty()
        || stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// A launch template whose process exits at once: the controller backs off (1, 2, 4 … s, one
/// launch at a time), as `up` does (drill 5), instead of launching in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_template_backs_off_in_the_agent_tier() {
    let dir = tempfile::tempdir().unwrap();
    let text = proxy_stack(101, 1, 1, 1).replace(
        r#"command: [proxyfleet, proxy, -f, "{dir}/squid.conf"]"#,
        r#"command: [sh, -c, "exit 3"]"#,
    );
    let stack = proxyfleet_stack::parse(&text, std::path::Path::new("crash.yaml")).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let _reaper = Reaper(store.clone(), dir.path().to_path_buf());
    let shared: Arc<dyn StateStore> = store.clone();
    let a = Agent::start(config("ha", "a", &stack, dir.path()), shared.clone())
        .await
        .unwrap();
    // Watched over ten seconds (failed launches stay in the state for minutes: none is
    // forgotten in between, so the state holds every launch).
    let started = Instant::now();
    let mut launched = 0;
    while started.elapsed() < Duration::from_secs(10) {
        launched = snapshot(&*store).await.instances.len();
        assert!(launched <= 8, "launching in a loop: {launched} launches");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = snapshot(&*store).await;
    let failed = s
        .instances
        .values()
        .filter(|i| {
            i.in_service_at.is_none()
                && matches!(
                    i.reason,
                    Some(proxyfleet_state::Cause::ProcessExited { .. })
                )
        })
        .count();
    let backoff = proxyfleet_roles::decide::launch_backoff(&s, "g");
    println!(
        "roles: crash-looping template: {launched} launches in 10 s, {failed} failed, back-off at {} failures",
        backoff.failures
    );
    assert!(
        (3..=6).contains(&launched),
        "back-off 1, 2, 4, 8 s: {launched} launches: {:#?}",
        s.instances
    );
    assert!(backoff.failures >= 3, "{backoff:?}");
    a.shutdown().await;
}

/// Target tracking in the agent tier: the nodes report the flows they carry, the controller
/// sums them over the nodes and moves the desired capacity (5 connections per instance), with
/// the cooldowns kept in the group's state; each instance's target is capped at the client
/// cap its host read from its configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_tracking_follows_the_flows_the_nodes_report() {
    let dir = tempfile::tempdir().unwrap();
    let text = proxy_stack(102, 1, 1, 3).replace(
        "    health_check_grace_period: 1s\n",
        "    health_check_grace_period: 1s\n    scaling:\n      target_active_connections_per_instance: 5\n      scale_out_cooldown: 1s\n      scale_in_cooldown: 2s\n",
    );
    let stack = proxyfleet_stack::parse(&text, std::path::Path::new("tracking.yaml")).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let _reaper = Reaper(store.clone(), dir.path().to_path_buf());
    let shared: Arc<dyn StateStore> = store.clone();
    let a = Agent::start(config("ha", "a", &stack, dir.path()), shared.clone())
        .await
        .unwrap();
    until(
        &*store,
        "one serving instance",
        Duration::from_secs(20),
        |s| serving(s, "a").len() == 1,
    )
    .await;
    let s = snapshot(&*store).await;
    let first = s.instances.values().next().unwrap();
    assert_eq!(
        first.capacity,
        Some(8192),
        "Squid's default max_filedescriptors, halved"
    );

    // 12 connections held open through node a: 12 / 5 per instance = 3 instances.
    let node: std::net::SocketAddr = "127.102.1.10:3128".parse().unwrap();
    let held: Vec<_> = tokio::task::block_in_place(|| {
        (0..12)
            .map(|i| testkit::client::connect_from(&format!("127.20.102.{}", i + 1), node))
            .collect()
    });
    let took = until(&*store, "scaled out to 3", Duration::from_secs(30), |s| {
        s.groups["g"].desired == 3 && serving(s, "a").len() == 3
    })
    .await;
    let s = snapshot(&*store).await;
    let reported: u64 = s
        .targets
        .values()
        .flat_map(|t| t.values())
        .flat_map(|t| t.nodes.values())
        .map(|v| v.active_flows)
        .sum();
    println!(
        "roles: 12 held connections: scaled out to 3 in service after {} ms ({reported} flows reported)",
        took.as_millis()
    );
    assert!(s.groups["g"].last_scale_out.is_some());
    drop(held);
    let took = until(
        &*store,
        "scaled back in to 1",
        Duration::from_secs(40),
        |s| {
            s.groups["g"].desired == 1
                && s.instances
                    .values()
                    .filter(|i| i.lifecycle == Lifecycle::InService)
                    .count()
                    == 1
        },
    )
    .await;
    let s = snapshot(&*store).await;
    println!(
        "roles: connections closed: back to 1 in service after {} ms",
        took.as_millis()
    );
    let (out, inn) = (s.groups["g"].last_scale_out, s.groups["g"].last_scale_in);
    assert!(
        inn.zip(out).is_some_and(|(i, o)| i.0 >= o.0 + 2000),
        "scale-in waited for its cooldown after the scale-out: out {out:?}, in {inn:?}"
    );
    a.shutdown().await;
}
