//! Configuration reads are bounded (issue 12, item 5): `proxyfleet proxy --check` and
//! `proxyfleet check` run as real processes on hostile inputs (`/dev/zero` as an include
//! and as an ACL value file, a FIFO include, a 100 MB single line, one 15 MiB file included
//! five times, a 1 MiB line in an ACL value file, a 50 MB stack file) and
//! must refuse each with an error naming the file (and the including line:column), within
//! seconds and with a small peak RSS. Each test prints what it measured.
//!
//! The peak RSS comes from the kernel's own account of the reaped child (`wait4`'s
//! `ru_maxrss`), which sees the peak even of a process that lives a few milliseconds; polling
//! `/proc/PID/status` could miss it.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

/// Every run must end within this.
const TIME_LIMIT: Duration = Duration::from_secs(5);
/// And stay below this peak resident size (the binary itself needs about 10 MiB).
const RSS_LIMIT_KIB: i64 = 100 * 1024;

struct Run {
    code: i32,
    stderr: String,
    elapsed: Duration,
    peak_rss_kib: i64,
}

/// Runs `proxyfleet ARGS`, reaping it with `wait4` for its peak RSS; a child still running
/// at `TIME_LIMIT` is killed (by its pid) and reaped, and the test fails.
fn run(what: &str, args: &[&str], dir: &Path) -> Run {
    // One child at a time: until its exec the child shares this process's memory (vfork), so
    // a sibling test's big buffer would show in its peak.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let err_path = dir.join(format!("{what}.stderr"));
    let start = Instant::now();
    // Reaped below with wait4 (for its rusage), not Child::wait, on every path.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap())
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value to be overwritten by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: `status` and `usage` are valid for writes; `pid` is our unreaped child.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break;
        }
        if start.elapsed() > TIME_LIMIT {
            timed_out = true;
            // SAFETY: signalling and reaping our own child by its pid.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut usage);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let peak_rss_kib = usage.ru_maxrss;
    println!(
        "{what}: exit {code} in {} ms, peak RSS {peak_rss_kib} KiB; stderr: {}",
        elapsed.as_millis(),
        stderr.trim()
    );
    assert!(!timed_out, "{what}: still running after {TIME_LIMIT:?}");
    assert!(
        elapsed < TIME_LIMIT,
        "{what}: took {elapsed:?} (limit {TIME_LIMIT:?})"
    );
    assert!(
        peak_rss_kib < RSS_LIMIT_KIB,
        "{what}: peak RSS {peak_rss_kib} KiB (limit {RSS_LIMIT_KIB} KiB)"
    );
    Run {
        code,
        stderr,
        elapsed,
        peak_rss_kib,
    }
}

fn check_conf(what: &str, dir: &Path, text: &str) -> Run {
    let conf = dir.join(format!("{what}.conf"));
    std::fs::write(&conf, text).unwrap();
    run(
        what,
        &["proxy", "-f", conf.to_str().unwrap(), "--check"],
        dir,
    )
}

fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path for the whole call.
    let rc = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

const TAIL: &str = "http_access allow localhost\nhttp_port 127.0.0.1:3128\n";

#[test]
fn dev_zero_as_an_include_is_refused_at_the_include_line() {
    let dir = tempfile::tempdir().unwrap();
    let r = check_conf(
        "include-dev-zero",
        dir.path(),
        &format!("via off\n  include /dev/zero\n{TAIL}"),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("include-dev-zero.conf:2:11: include: cannot read '/dev/zero'")
            && r.stderr.contains("a character device, not a regular file"),
        "{}",
        r.stderr
    );
}

#[test]
fn dev_zero_as_an_acl_value_file_is_refused_at_the_acl_line() {
    let dir = tempfile::tempdir().unwrap();
    let r = check_conf(
        "acl-dev-zero",
        dir.path(),
        &format!("acl apps src \"/dev/zero\"\n{TAIL}"),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("acl-dev-zero.conf:1:14: acl 'apps': cannot read value file '/dev/zero'")
            && r.stderr.contains("a character device"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_fifo_include_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("conf.d/pipe.conf");
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    mkfifo(&fifo);
    // Both as a plain name and as what a glob matches.
    for (what, include) in [
        ("include-fifo", fifo.to_str().unwrap()),
        ("include-fifo-glob", "conf.d/*.conf"),
    ] {
        let r = check_conf(what, dir.path(), &format!("include {include}\n{TAIL}"));
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("{what}.conf:1:9: include: cannot read '"))
                && r.stderr.contains("a FIFO (named pipe), not a regular file"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn a_100_mb_single_line_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let line = dir.path().join("line.conf");
    let mut f = File::create(&line).unwrap();
    f.write_all(b"acl apps src ").unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..100 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\n").unwrap();
    drop(f);
    // As the main file and as an include: over the 16 MiB file cap.
    let r = run(
        "100mb-line-main",
        &["proxy", "-f", line.to_str().unwrap(), "--check"],
        dir.path(),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("line.conf: cannot read the file: larger than the 16 MiB limit"),
        "{}",
        r.stderr
    );
    let r = check_conf(
        "100mb-line-include",
        dir.path(),
        &format!("include {}\n{TAIL}", line.display()),
    );
    assert!(
        r.stderr.contains("larger than the 16 MiB limit"),
        "{}",
        r.stderr
    );
    // Under the file cap but over the 64 KiB line cap, continuations included: the lexer
    // (24 bytes per character) never sees it.
    let long = format!(
        "via off\n  acl apps dstdomain \\\n{}\n{TAIL}",
        "a.example ".repeat(1024 * 1024)
    );
    let r = check_conf("10mb-logical-line", dir.path(), &long);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "10mb-logical-line.conf:2:3: line longer than the 64 KiB limit (continuations included)"
        ),
        "{}",
        r.stderr
    );
    println!(
        "10 MiB logical line: {} ms, {} KiB",
        r.elapsed.as_millis(),
        r.peak_rss_kib
    );
}

#[test]
fn the_files_of_one_configuration_read_at_most_64_mib_together() {
    let dir = tempfile::tempdir().unwrap();
    // 15 MiB of comments: under the 16 MiB file cap, and cheap to lex.
    let big = dir.path().join("big.conf");
    let mut f = File::create(&big).unwrap();
    let chunk = "# padding padding padding padding padding padding padding padding\n".repeat(1024);
    while f.metadata().unwrap().len() < 15 * 1024 * 1024 {
        f.write_all(chunk.as_bytes()).unwrap();
    }
    drop(f);
    // Four times is 60 MiB, the fifth would pass 64 MiB: refused at the include naming it.
    let r = check_conf(
        "include-five-times",
        dir.path(),
        &format!("via off\ninclude big.conf big.conf big.conf big.conf big.conf\n{TAIL}"),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let col = "include big.conf big.conf big.conf big.conf ".len() + 1;
    assert!(
        r.stderr.contains(&format!(
            "include-five-times.conf:2:{col}: include: cannot read '{}': it would take the \
             configuration's files together past the 64 MiB limit",
            big.display()
        )),
        "{}",
        r.stderr
    );
    // Four times is read.
    let r = check_conf(
        "include-four-times",
        dir.path(),
        &format!("include big.conf big.conf big.conf big.conf\n{TAIL}"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn an_acl_value_file_line_over_64_kib_is_refused_at_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("patterns.txt");
    std::fs::write(
        &values,
        format!("^good\\.example$\n{}\n", "(a|b)*".repeat(1024 * 1024 / 6)),
    )
    .unwrap();
    let r = check_conf(
        "acl-long-value-line",
        dir.path(),
        &format!("acl bad dstdom_regex \"{}\"\n{TAIL}", values.display()),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:2:1: acl 'bad': line longer than the 64 KiB limit",
            values.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn a_50_mb_stack_file_and_non_files_are_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut f = File::create(&big).unwrap();
    let chunk =
        "# padding padding padding padding padding padding padding padding\n".repeat(16_384);
    while f.metadata().unwrap().len() < 50 * 1024 * 1024 {
        f.write_all(chunk.as_bytes()).unwrap();
    }
    drop(f);
    let fifo = dir.path().join("pipe.yaml");
    mkfifo(&fifo);
    for (what, path, says) in [
        (
            "stack-50mb",
            big.to_str().unwrap(),
            "larger than the 4 MiB limit",
        ),
        (
            "stack-dev-zero",
            "/dev/zero",
            "a character device, not a regular file",
        ),
        (
            "stack-fifo",
            fifo.to_str().unwrap(),
            "a FIFO (named pipe), not a regular file",
        ),
    ] {
        let r = run(what, &["check", "-f", path], dir.path());
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("{path}: {says}")),
            "{what}: {}",
            r.stderr
        );
    }
}
