//! Running `proxyfleet up` in a test: a temp state directory, the real binary, and its CLI
//! verbs (`status --json`, `activity --json`, ...) as a user would run them.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testkit::process::{run, Owned};

use super::BIN;

pub struct Up {
    pub child: Owned,
    pub state: tempfile::TempDir,
}

impl Up {
    /// Starts `up` (with `stack` written to a file, or the built-in stack when `None`) and
    /// waits for its "ready" line.
    pub fn start(stack: Option<&str>) -> Up {
        Self::start_in(tempfile::tempdir().unwrap(), stack, "proxyfleet up: ready")
    }

    /// Starts `up` and waits only for its admin API (for stacks that never get ready).
    pub fn start_unready(stack: &str) -> Up {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            Some(stack),
            "proxyfleet up: admin API on",
        )
    }

    /// Starts `up` on an existing state directory, waiting for a stdout line containing `until`.
    pub fn start_in(state: tempfile::TempDir, stack: Option<&str>, until: &str) -> Up {
        let dir = state.path().display().to_string();
        let mut args = vec!["up".to_string(), "--state-dir".to_string(), dir];
        if let Some(text) = stack {
            let file = state.path().join("stack.yaml");
            std::fs::write(&file, text).unwrap();
            args.push("-f".into());
            args.push(file.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = Owned::spawn(BIN, &args);
        child.wait_stdout(until, Duration::from_secs(60), |l| {
            l.contains(until).then_some(())
        });
        Up { child, state }
    }

    /// Starts `up` (the roles in one process, on SQLite: its default) on `stack` and waits
    /// for its "ready" line.
    pub fn start_on_roles(stack: &str) -> Up {
        let state = tempfile::tempdir().unwrap();
        let file = state.path().join("stack.yaml");
        std::fs::write(&file, stack).unwrap();
        let dir = state.path().display().to_string();
        let file = file.display().to_string();
        let mut child = Owned::spawn(BIN, &["up", "--state-dir", &dir, "-f", &file]);
        child.wait_stdout("up ready", Duration::from_secs(60), |l| {
            l.contains("proxyfleet up: ready").then_some(())
        });
        Up { child, state }
    }

    /// Starts `up` on `stack` in `state` through `sh -c "SETUP; exec up ..."` — a umask, a
    /// ulimit, a leaked descriptor: what the shell that starts it may do — with `env` added,
    /// and waits for its ready line.
    pub fn start_through_shell(
        state: tempfile::TempDir,
        setup: &str,
        stack: &str,
        env: &[(&str, &str)],
    ) -> Up {
        let file = state.path().join("stack.yaml");
        std::fs::write(&file, stack).unwrap();
        let dir = state.path().display().to_string();
        let file = file.display().to_string();
        let script = format!(r#"{setup}; exec "$0" "$@""#);
        let args = ["-c", &script, BIN, "up", "--state-dir", &dir, "-f", &file];
        let mut child = Owned::spawn_with_env("sh", &args, env);
        child.wait_stdout("up ready", Duration::from_secs(60), |l| {
            l.contains("proxyfleet up: ready").then_some(())
        });
        Up { child, state }
    }

    /// kill -9 of `up` alone (its instances live on); returns the state directory for a
    /// restart.
    pub fn crash(mut self) -> tempfile::TempDir {
        self.child.signal(libc::SIGKILL);
        self.child.wait_exit(Duration::from_secs(10));
        std::mem::replace(&mut self.state, tempfile::tempdir().unwrap())
    }

    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    /// Runs `proxyfleet VERB ARGS... --state-dir DIR`; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let dir = self.dir().display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--state-dir", &dir]);
        let (status, out, err) = run(BIN, &all, Duration::from_secs(60));
        (status.code().unwrap_or(-1), out, err)
    }

    pub fn status(&self) -> Value {
        let (code, out, err) = self.cli(&["status", "--json"]);
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }

    pub fn activity(&self) -> Value {
        let (code, out, err) = self.cli(&["activity", "--json"]);
        assert_eq!(code, 0, "activity failed: {err}");
        serde_json::from_str(&out).unwrap()
    }

    /// InService instances as (id, zone, address).
    pub fn in_service(&self) -> Vec<(String, String, String)> {
        self.status()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["lifecycle"] == "InService")
            .map(|i| (s(&i["id"]), s(&i["zone"]), s(&i["address"])))
            .collect()
    }

    /// One instance's status entry, by id.
    pub fn instance(&self, id: &str) -> Value {
        let status = self.status();
        let found = status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned();
        found.unwrap_or_else(|| panic!("no instance {id} in {status}"))
    }

    /// The pid of an instance's process.
    pub fn pid_of(&self, id: &str) -> u64 {
        self.instance(id)["pid"].as_u64().unwrap()
    }

    pub fn healthy_targets(&self) -> usize {
        self.status()["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["health"] == "Healthy")
            .count()
    }
}

/// A one-zone-pair stack on 127.NET.x.0/24 running `proxyfleet proxy` instances.
pub fn proxy_stack(net: u8, min: u32, desired: u32, max: u32) -> String {
    format!(
        r#"zones:
  a: {{ subnet: 127.{net}.1.0/24 }}
  c: {{ subnet: 127.{net}.2.0/24 }}
networks:
  app: 127.20.0.0/16
  service: 127.30.0.0/16
service_networks: [service]
security_groups:
  sg:
    ingress:
      - {{ protocol: tcp, ports: "3128", from: app }}
      - {{ protocol: tcp, ports: "3128", from: a }}
      - {{ protocol: tcp, ports: "3128", from: c }}
load_balancers:
  front: {{ zones: [a, c] }}
listeners:
  - {{ load_balancer: front, port: 3128, protocol: tcp, target_group: tg }}
target_groups:
  tg:
    protocol: tcp
    port: 3128
    deregistration_delay: 1s
    health_check: {{ protocol: http, path: /healthz, interval: 200ms, timeout: 200ms }}
launch_templates:
  proxy:
    command: [proxyfleet, proxy, -f, "{{dir}}/squid.conf"]
    stop_timeout: 5s
    files:
      squid.conf: |
        http_port {{address}}:{{port}}
        acl ok src 127.0.0.0/8
        http_access allow ok
        access_log none
        dns_nameservers 127.0.0.1
        shutdown_lifetime 1 second
groups:
  g:
    launch_template: proxy
    min: {min}
    desired: {desired}
    max: {max}
    zones: [a, c]
    target_groups: [tg]
    security_groups: [sg]
    health_check_type: lb
    health_check_grace_period: 1s
"#
    )
}

pub fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

impl Drop for Up {
    /// A test's `up` is stopped gracefully, so that its instances (which outlive a killed
    /// `up` by design) and its firewall table go with it, even when the test fails.
    fn drop(&mut self) {
        if self.child.has_exited() {
            return;
        }
        self.child.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.child.has_exited() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
