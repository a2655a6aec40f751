//! A real Squid (Debian's 5.7, which the test command installs) started by a test on a
//! squid.conf body of the test's choosing, for differential tests: the same body, the same
//! requests, through Squid and through proxyfleet. Squid runs in the foreground (`-N`) as
//! the test's child (killed and reaped on drop) with everything in a temporary directory.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use testkit::process::Owned;

pub struct Squid {
    pub child: Owned,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

/// Why Squid cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let ok = std::process::Command::new("squid")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Some("squid is not installed (the test command installs it)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("Squid as the tests run it needs root (it drops to the proxy user)".into());
    }
    None
}

impl Squid {
    /// Starts Squid on `body` (ACLs, rules...; `ACCESS_LOG` replaced by its log's path),
    /// with its port, pid file, cache log and (unless the body has one) access log added.
    pub fn start(body: &str) -> Squid {
        Self::start_on(body, "")
    }

    /// As [`Squid::start`], its `http_port` line with `options` (`accel vhost`, ...).
    pub fn start_on(body: &str, options: &str) -> Squid {
        // The port is chosen free and then bound by Squid: another test may take it in
        // between, so a Squid that could not bind is started again on another.
        let mut last_failure = String::new();
        for _ in 0..5 {
            match Self::try_start(body, options) {
                Ok(squid) => return squid,
                Err(why) => last_failure = why,
            }
        }
        panic!("squid did not start: {last_failure}");
    }

    fn try_start(body: &str, options: &str) -> Result<Squid, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        // Squid drops to the `proxy` user: its files must be writable by it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("access.log");
        let body = body.replace("ACCESS_LOG", &log.display().to_string());
        let default_log = if body.contains("access_log") {
            String::new()
        } else {
            format!("access_log stdio:{} squid\n", log.display())
        };
        let conf = format!(
            "http_port 127.0.0.1:{port} {options}\n\
             pid_filename {dir}/squid.pid\n\
             cache_log {dir}/cache.log\n\
             coredump_dir {dir}\n\
             {default_log}{body}\n",
            dir = dir.path().display()
        );
        let file = dir.path().join("squid.conf");
        std::fs::write(&file, conf).unwrap();
        // A service name of its own (`-n`): Squids running at once would share shared
        // memory segment names otherwise.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let service = format!(
            "diff{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut child = Owned::spawn(
            "squid",
            &["-N", "-n", &service, "-f", file.to_str().unwrap()],
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started =
            testkit::wait::until("squid to listen or exit", Duration::from_secs(30), || {
                if child.has_exited() {
                    return Some(Err(format!(
                        "squid exited: {:?} {:?}\n{}",
                        child.stdout(),
                        child.stderr(),
                        std::fs::read_to_string(dir.path().join("cache.log")).unwrap_or_default()
                    )));
                }
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_ok()
                    .then_some(Ok(()))
            });
        started.map(|()| Squid { child, dir, addr })
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

/// A port nothing listens on now (the kernel's choice, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
