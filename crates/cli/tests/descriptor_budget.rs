//! The descriptor budget (issue 12): a stack whose nodes could hold more flows than the
//! process's open-file limit carries (two descriptors per flow, plus health checks and a
//! reserve) is not left to hit EMFILE mid-flood: `check` says so, and `up` caps the flows it
//! holds at once across all nodes, saying so at start.

mod common;

use std::time::Duration;

use common::up::{proxy_stack, Up};
use common::BIN;
use testkit::process::run;

#[test]
fn check_says_when_the_stack_needs_more_descriptors_than_the_limit() {
    // The built-in stack: 2 nodes x 10,000 flows x 2 + 2 x 2 checks + 768 reserved.
    let (status, out, err) = run(BIN, &["check"], Duration::from_secs(30));
    assert!(status.success(), "{out}{err}");
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().1;
    let warned = out.contains("the stack needs 40772 file descriptors");
    println!("open-file hard limit {hard}; check: {out}");
    assert_eq!(warned, hard < 40_772, "{out}");
    if warned {
        let flows = (hard - 4 - 768) / 2;
        assert!(
            out.contains(&format!("would hold at most {flows} flows at once")),
            "{out}"
        );
    }
}

#[test]
fn up_caps_its_flows_to_what_its_open_file_limit_carries() {
    // 2 nodes x 10,000 flows x 2 do not fit in 4,096 descriptors.
    let up = Up::start_through_shell(
        tempfile::tempdir().unwrap(),
        "ulimit -n 4096 && ulimit -Hn 4096",
        &proxy_stack(90, 1, 1, 1),
        &[],
    );
    let line = up
        .child
        .stdout()
        .into_iter()
        .find(|l| l.contains("open-file limit is 4096"))
        .expect("the flow cap warning before ready");
    println!("{line}");
    // 1 group of max 1 behind 2 nodes: 2 checks.
    let flows = (4096 - 2 - 768) / 2;
    assert!(
        line.contains(&format!("at most {flows} flows at once across all nodes")),
        "{line}"
    );
}
