//! The descriptor budget (issue 12): a stack whose nodes could hold more flows than the
//! process's open-file limit carries (two descriptors per flow, plus health checks and a
//! reserve) is not left to hit EMFILE mid-flood: `check` says so, and `up` caps the flows it
//! holds at once across all nodes, saying so at start.

mod common;

use std::time::Duration;

use common::up::proxy_stack;
use common::BIN;
use testkit::process::{run, Owned};

#[test]
fn check_says_when_the_stack_needs_more_descriptors_than_the_limit() {
    // The built-in stack: 2 nodes x 10,000 flows x 2 + 2 x 2 checks + 256 reserved.
    let (status, out, err) = run(BIN, &["check"], Duration::from_secs(30));
    assert!(status.success(), "{out}{err}");
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().1;
    let warned = out.contains("the stack needs 40260 file descriptors");
    println!("open-file hard limit {hard}; check: {out}");
    assert_eq!(warned, hard < 40_260, "{out}");
    if warned {
        let flows = (hard - 4 - 256) / 2;
        assert!(
            out.contains(&format!("would hold at most {flows} flows at once")),
            "{out}"
        );
    }
}

#[test]
fn up_caps_its_flows_to_what_its_open_file_limit_carries() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("stack.yaml");
    std::fs::write(&file, proxy_stack(90, 1, 1, 1)).unwrap();
    // 2 nodes x 10,000 flows x 2 do not fit in 4,096 descriptors.
    let script = format!(
        "ulimit -n 4096 && ulimit -Hn 4096 && exec {BIN} up --state-dir {} -f {}",
        state.path().display(),
        file.display()
    );
    let mut up = Owned::spawn("sh", &["-c", &script]);
    let line = up.wait_stdout("the flow cap warning", Duration::from_secs(30), |l| {
        l.contains("open-file limit is 4096").then(|| l.to_string())
    });
    println!("{line}");
    // 1 group of max 1 behind 2 nodes: 2 checks.
    let flows = (4096 - 2 - 256) / 2;
    assert!(
        line.contains(&format!("at most {flows} flows at once across all nodes")),
        "{line}"
    );
    up.wait_stdout("ready", Duration::from_secs(30), |l| {
        l.contains("proxyfleet up: ready").then_some(())
    });
    up.signal(libc::SIGTERM);
    assert!(up.wait_exit(Duration::from_secs(30)).success());
}
