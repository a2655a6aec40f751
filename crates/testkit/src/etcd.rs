//! A real 3-member etcd cluster on loopback, owned by a test.
//!
//! Member `i` of network `[x, y]` binds `127.99.x.(y+i)`: clients on port 2379, peers on 2380
//! (each test picks its own network, so clusters of tests running at once never meet). Timers
//! are tuned (`--heartbeat-interval=50 --election-timeout=500`) so a leader's loss is noticed
//! in about half a second and a 1 s lease is meaningful. Data lives in a temporary directory,
//! removed on drop; every member is killed by pid and reaped on drop, however the test ends.
//! Each member's log goes to `member-I.log` in that directory (etcd logs a lot: a file, not
//! memory), and a failed start prints its tail.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// How long a member may take to answer `/health` after it starts (three members on a loaded
/// 2-core machine elect a leader in well under this).
const READY: Duration = Duration::from_secs(20);

/// Whether the `etcd` binary is on PATH. Tests that need it print
/// `SKIPPED: etcd not installed` and return when it is not.
pub fn installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Cluster {
    dir: tempfile::TempDir,
    addresses: Vec<Ipv4Addr>,
    /// Member `i` runs in network namespace `namespaces[i]` when there is one (a host of
    /// the drills across hosts), else in the test's own.
    namespaces: Vec<Option<String>>,
    /// `None` while killed.
    members: Vec<Option<Child>>,
}

impl Cluster {
    /// Starts three members on `127.99.net[0].(net[1]..net[1]+2)` and waits until each
    /// answers `/health` with `true` (the cluster has a leader).
    pub fn start(net: [u8; 2]) -> Cluster {
        assert!(
            net[1] <= 252,
            "three member addresses must fit in 127.99.x.y"
        );
        let addresses = (0..3)
            .map(|i| Ipv4Addr::new(127, 99, net[0], net[1] + i))
            .collect();
        Cluster::start_members(addresses, vec![None, None, None])
    }

    /// Starts one member per `(namespace, address)`, each inside its namespace (see
    /// `netns`), on port 2379/2380 of its address; waits until each is healthy.
    pub fn start_in(members: &[(String, Ipv4Addr)]) -> Cluster {
        Cluster::start_members(
            members.iter().map(|(_, a)| *a).collect(),
            members.iter().map(|(ns, _)| Some(ns.clone())).collect(),
        )
    }

    fn start_members(addresses: Vec<Ipv4Addr>, namespaces: Vec<Option<String>>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("proxyfleet-etcd-")
            .tempdir()
            .expect("a temporary directory for etcd's data");
        let n = addresses.len();
        let mut cluster = Cluster {
            dir,
            addresses,
            namespaces,
            members: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    /// `http://ADDR:2379` of every member, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.addresses.len())
            .map(|i| self.client_url(i))
            .collect()
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("http://{}:{CLIENT_PORT}", self.addresses[i])
    }

    /// The member's pid, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the member hangs (its sockets stay open, nothing answers).
    pub fn stop(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONT after [`Cluster::stop`].
    pub fn cont(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// Kills the member (if it runs) and starts it again on its data, then waits for it to be
    /// healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Which member is the raft leader now, by asking each running member's status.
    pub fn leader(&self) -> Option<usize> {
        (0..self.addresses.len()).find(|&i| {
            self.members[i].is_some()
                && self
                    .post(i, "/v3/maintenance/status", "{}", Duration::from_secs(1))
                    .and_then(|body| {
                        let member = json_field(&body, "member_id")?;
                        let leader = json_field(&body, "leader")?;
                        Some(member == leader)
                    })
                    .unwrap_or(false)
        })
    }

    /// Makes member `to` the raft leader (etcd's leadership transfer, asked of the current
    /// leader) and waits until it is.
    pub fn move_leader(&self, to: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let leader = self.wait_leader(limit);
            if leader == to {
                return;
            }
            let target = self
                .post(to, "/v3/maintenance/status", "{}", Duration::from_secs(1))
                .and_then(|body| json_field(&body, "member_id"));
            if let Some(id) = target {
                let body = format!("{{\"targetID\":\"{id}\"}}");
                self.post(
                    leader,
                    "/v3/maintenance/transfer-leadership",
                    &body,
                    Duration::from_secs(2),
                );
            }
            assert!(
                Instant::now() < deadline,
                "etcd leadership not moved to member {to} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until some member is the raft leader; returns it.
    pub fn wait_leader(&self, limit: Duration) -> usize {
        wait::until("an etcd raft leader", limit, || self.leader())
    }

    fn signal(&self, i: usize, signal: i32) {
        if let Some(child) = &self.members[i] {
            // SAFETY: kill(2) on our own child's pid, which is not yet reaped (we hold it).
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    fn name(i: usize) -> String {
        format!("m{i}")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("member-{i}.log"))
    }

    fn spawn(&mut self, i: usize) {
        let ip = self.addresses[i];
        let initial_cluster = self
            .addresses
            .iter()
            .enumerate()
            .map(|(j, a)| format!("{}=http://{a}:{PEER_PORT}", Cluster::name(j)))
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("etcd member log file");
        // In a namespace, `ip netns exec` replaces itself with etcd: the pid is etcd's.
        let mut command = match &self.namespaces[i] {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let child = command
            .args([
                "--name".to_string(),
                Cluster::name(i),
                "--data-dir".to_string(),
                self.dir.path().join(Cluster::name(i)).display().to_string(),
                "--listen-client-urls".to_string(),
                format!("http://{ip}:{CLIENT_PORT}"),
                "--advertise-client-urls".to_string(),
                format!("http://{ip}:{CLIENT_PORT}"),
                "--listen-peer-urls".to_string(),
                format!("http://{ip}:{PEER_PORT}"),
                "--initial-advertise-peer-urls".to_string(),
                format!("http://{ip}:{PEER_PORT}"),
                "--initial-cluster".to_string(),
                initial_cluster,
                "--initial-cluster-state".to_string(),
                "new".to_string(),
                "--initial-cluster-token".to_string(),
                format!("proxyfleet-test-{}", self.addresses[0]),
                "--heartbeat-interval=50".to_string(),
                "--election-timeout=500".to_string(),
                // A member that was cut off comes back with a higher term; without pre-vote it
                // deposes a healthy leader, and every agent waits out the election (3.5's
                // default; 3.4 needs asking).
                "--pre-vote".to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("cannot start etcd");
        self.members[i] = Some(child);
    }

    fn wait_healthy(&mut self, i: usize) {
        let ip = self.addresses[i];
        let deadline = Instant::now() + READY;
        loop {
            if let Some(body) = self.get(i, "/health", Duration::from_secs(1)) {
                if body.contains("\"health\":\"true\"") {
                    return;
                }
            }
            let exited = self.members[i]
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "etcd member {i} at {ip} not healthy within {READY:?} (exited: {exited}); its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Cluster {
    fn get(&self, i: usize, path: &str, limit: Duration) -> Option<String> {
        let ip = self.addresses[i];
        self.exchange(
            i,
            &format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n"),
            limit,
        )
    }

    fn post(&self, i: usize, path: &str, body: &str, limit: Duration) -> Option<String> {
        let ip = self.addresses[i];
        self.exchange(
            i,
            &format!(
                "POST {path} HTTP/1.0\r\nHost: {ip}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            limit,
        )
    }

    /// One exchange with member `i`, from inside its namespace when it has one.
    fn exchange(&self, i: usize, request: &str, limit: Duration) -> Option<String> {
        let ip = self.addresses[i];
        match &self.namespaces[i] {
            Some(ns) => crate::netns::run_in(ns, || exchange(ip, request, limit)),
            None => exchange(ip, request, limit),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            // A stopped member would not die of SIGKILL any later, but SIGCONT first keeps
            // nothing waiting on it.
            self.cont(i);
            self.kill(i);
        }
    }
}

/// The raw string value of `"name":"VALUE"` in a small JSON body (etcd's int64 are strings):
/// enough for the harness, which does not need a JSON parser.
fn json_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let len = body[start..].find('"')?;
    Some(body[start..start + len].to_string())
}

/// One HTTP/1.0 exchange (the server closes after the response); the response body.
fn exchange(ip: Ipv4Addr, request: &str, limit: Duration) -> Option<String> {
    let addr = SocketAddr::from((ip, CLIENT_PORT));
    let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.take(1 << 20).read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(body.to_string())
}
