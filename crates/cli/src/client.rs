//! How the operator verbs (`status`, `activity`, `scale`, `terminate`, `down`) find and
//! talk to a running `up`: its state directory holds `admin.addr`, `admin.token` (sent
//! with every call when readable, needed for calls that change something and for reads of
//! a stack with `admin.read_requires_token`) and `admin.sock`, and the admin API answers
//! JSON.
//!
//! Calls go to `admin.sock` when it is there: only the tier's owner can connect to it, so
//! however many connections other local clients hold on the TCP port, the CLI gets in. When
//! the socket cannot be reached (not there, another user's, a path too long for a socket
//! address), the call goes to `admin.addr` instead; nothing was sent yet, so even a `POST`
//! is safe to send again.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use proxyfleet_admin::client::{self, ClientError, Endpoint, Response};
use proxyfleet_admin::{ADDR_FILE, SOCKET_FILE, TOKEN_FILE};
use serde::de::DeserializeOwned;

use crate::Failure;

/// Where `up` keeps its state unless told otherwise; every verb looks there too.
pub const DEFAULT_STATE_DIR: &str = ".proxyfleet";

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `--state-dir DIR`, shared by every verb that talks to `up`.
#[derive(Args, Debug, Clone)]
pub struct StateDir {
    /// The state directory of the `proxyfleet up` to talk to.
    #[arg(long = "state-dir", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// A running `up`'s admin API.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    /// `admin.sock`, when there is a socket at that path.
    socket: Option<PathBuf>,
    state_dir: PathBuf,
    token: Option<String>,
}

fn failure(message: String) -> Failure {
    Failure {
        code: 1,
        error: anyhow!(message),
    }
}

impl Api {
    /// Finds the API of the `up` that runs on `state_dir`.
    pub fn locate(state_dir: &Path) -> Result<Api, Failure> {
        let path = state_dir.join(ADDR_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(failure(format!(
                    "no running proxyfleet up found in {} (no {ADDR_FILE})",
                    state_dir.display()
                )));
            }
            Err(e) => return Err(failure(format!("cannot read {}: {e}", path.display()))),
        };
        let addr = text.trim().parse().map_err(|e| {
            failure(format!(
                "{}: {:?} is not an address: {e}",
                path.display(),
                text.trim()
            ))
        })?;
        // Reads send the token too when it can be read: a stack with
        // `admin.read_requires_token` needs it for `status` and `activity` as well.
        let token = std::fs::read_to_string(state_dir.join(TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string());
        let socket = state_dir.join(SOCKET_FILE);
        let socket = std::fs::symlink_metadata(&socket)
            .is_ok_and(|m| m.file_type().is_socket())
            .then_some(socket);
        Ok(Api {
            addr,
            socket,
            state_dir: state_dir.to_path_buf(),
            token,
        })
    }

    /// The same, with the bearer token that calls which change something need.
    pub fn locate_with_token(state_dir: &Path) -> Result<Api, Failure> {
        let mut api = Api::locate(state_dir)?;
        let path = state_dir.join(TOKEN_FILE);
        let token = std::fs::read_to_string(&path)
            .map_err(|e| failure(format!("cannot read {}: {e}", path.display())))?;
        api.token = Some(token.trim().to_string());
        Ok(api)
    }

    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, Failure> {
        let token = self.token.as_deref();
        let mut endpoint = Endpoint::Tcp(self.addr);
        let mut answer = None;
        if let Some(socket) = &self.socket {
            let unix = Endpoint::Unix(socket.clone());
            match client::request(unix.clone(), method.clone(), path, token, body, TIMEOUT).await {
                // Could not connect: nothing was sent, TCP may still answer.
                Err(ClientError::Refused | ClientError::Connect(_)) => {}
                other => {
                    endpoint = unix;
                    answer = Some(other);
                }
            }
        }
        let answer = match answer {
            Some(answer) => answer,
            None => client::request(self.addr, method, path, token, body, TIMEOUT).await,
        };
        let response = answer.map_err(|e| self.explain(&endpoint, e))?;
        if !(200..300).contains(&response.status) {
            let message = response.error_message();
            if response.status == 401 {
                return Err(failure(format!(
                    "{message} (is {} from the running up?)",
                    self.state_dir.join(TOKEN_FILE).display()
                )));
            }
            return Err(failure(message));
        }
        Ok(response)
    }

    fn explain(&self, endpoint: &Endpoint, e: ClientError) -> Failure {
        match e {
            ClientError::Refused => failure(format!(
                "proxyfleet up is not running (admin API at {endpoint} refused the connection)"
            )),
            e => failure(format!("admin API at {endpoint}: {e}")),
        }
    }

    /// `GET path`, decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let response = self.call(hyper::Method::GET, path, None).await?;
        serde_json::from_slice(&response.body).map_err(|e| {
            failure(format!(
                "admin API at {}: GET {path}: unexpected answer: {e}",
                self.addr
            ))
        })
    }

    /// `POST path` with a JSON body (or none).
    pub async fn post(&self, path: &str, body: Option<serde_json::Value>) -> Result<(), Failure> {
        self.call(hyper::Method::POST, path, body.as_ref()).await?;
        Ok(())
    }

    /// `POST path` with a JSON body; the answer decoded from JSON.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, Failure> {
        let response = self.call(hyper::Method::POST, path, Some(&body)).await?;
        serde_json::from_slice(&response.body).map_err(|e| {
            failure(format!(
                "admin API at {}: POST {path}: unexpected answer: {e}",
                self.addr
            ))
        })
    }

    /// Whether anything still accepts connections at the API's address or its socket.
    pub async fn listening(&self) -> bool {
        let limit = Duration::from_secs(1);
        let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect(self.addr));
        if matches!(tcp.await, Ok(Ok(_)) | Err(_)) {
            return true;
        }
        let Some(socket) = &self.socket else {
            return false;
        };
        let unix = tokio::time::timeout(limit, tokio::net::UnixStream::connect(socket));
        matches!(unix.await, Ok(Ok(_)) | Err(_))
    }
}

/// Runs a verb's async body on a small runtime of its own.
pub fn block_on<T>(f: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved
/// characters), so any group or instance name makes a well-formed URL.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0);
            s.extend(std::iter::repeat_n(
                ' ',
                pad.saturating_sub(cell.chars().count()),
            ));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A duration for people: `45s`, `3m07s`, `2h05m`, `3d04h`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `Result::unwrap` and `unwrap_err` for tests (`Failure` is not `Debug`).
#[cfg(test)]
pub(crate) trait TestUnwrap<T> {
    fn must(self) -> T;
    fn fails(self) -> Failure;
}

#[cfg(test)]
impl<T> TestUnwrap<T> for Result<T, Failure> {
    #[track_caller]
    fn must(self) -> T {
        match self {
            Ok(v) => v,
            Err(f) => panic!("failed (exit {}): {:#}", f.code, f.error),
        }
    }

    #[track_caller]
    fn fails(self) -> Failure {
        match self {
            Ok(_) => panic!("succeeded where it should fail"),
            Err(f) => f,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use proxyfleet_admin::{Control, ControlError};
    use proxyfleet_state::report::{Activity, BalancerStatus, GroupStatus};

    /// Records calls; refuses group "nope" like the group controller does.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        stop: tokio::sync::Notify,
    }

    impl Control for Fake {
        fn stack_text(&self) -> String {
            String::new()
        }
        fn balancer(&self) -> BalancerStatus {
            BalancerStatus {
                load_balancers: vec![],
                targets: vec![],
            }
        }
        fn groups(&self) -> Vec<GroupStatus> {
            vec![]
        }
        fn activities(&self, _: Option<&str>, _: usize) -> Vec<Activity> {
            vec![]
        }
        fn scale(&self, group: &str, desired: u32) -> Result<(), ControlError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("scale {group} {desired}"));
            if group == "nope" {
                return Err(ControlError::NotFound("no group 'nope'".into()));
            }
            Ok(())
        }
        fn terminate(&self, _: &str, _: bool) -> Result<(), ControlError> {
            Ok(())
        }
        fn set_instance_health(&self, _: &str, _: bool) -> Result<(), ControlError> {
            Ok(())
        }
        fn shutdown(&self) {
            self.stop.notify_one();
        }
    }

    async fn serve(dir: &Path) -> (Arc<Fake>, proxyfleet_admin::AdminHandle) {
        let fake = Arc::new(Fake::default());
        let stopper = fake.clone();
        let handle =
            proxyfleet_admin::serve(
                fake.clone(),
                dir,
                async move { stopper.stop.notified().await },
            )
            .await
            .unwrap();
        (fake, handle)
    }

    fn message(f: Failure) -> (u8, String) {
        (f.code, format!("{:#}", f.error))
    }

    #[test]
    fn a_state_dir_without_an_address_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (code, msg) = message(Api::locate(dir.path()).fails());
        assert_eq!(code, 1);
        assert_eq!(
            msg,
            format!(
                "no running proxyfleet up found in {} (no admin.addr)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_dead_address_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        // A port that was just free: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::fs::write(dir.path().join(ADDR_FILE), format!("{addr}\n")).unwrap();
        let api = Api::locate(dir.path()).must();
        let err = block_on(api.get_json::<serde_json::Value>("/api/status")).fails();
        assert_eq!(
            message(err),
            (
                1,
                format!(
                    "proxyfleet up is not running (admin API at {addr} refused the connection)"
                )
            )
        );
    }

    #[test]
    fn a_garbled_address_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADDR_FILE), "nonsense\n").unwrap();
        let (code, msg) = message(Api::locate(dir.path()).fails());
        assert_eq!(code, 1);
        assert!(msg.contains("\"nonsense\" is not an address"), "{msg}");
    }

    #[tokio::test]
    async fn calls_carry_the_token_and_errors_carry_the_api_message() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, handle) = serve(dir.path()).await;
        let api = Api::locate_with_token(dir.path()).must();
        assert_eq!(api.addr, handle.addr);
        api.post(
            "/api/groups/proxies/scale",
            Some(serde_json::json!({"desired": 3})),
        )
        .await
        .must();
        let err = api
            .post(
                "/api/groups/nope/scale",
                Some(serde_json::json!({"desired": 1})),
            )
            .await
            .fails();
        assert_eq!(message(err), (1, "no group 'nope'".to_string()));
        assert_eq!(
            *fake.calls.lock().unwrap(),
            ["scale proxies 3", "scale nope 1"]
        );

        // Without the token (a state directory holding only the address): refused, and
        // the message points at the token file.
        let bare = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join(ADDR_FILE), bare.path().join(ADDR_FILE)).unwrap();
        let plain = Api::locate(bare.path()).must();
        let (code, msg) = message(
            plain
                .post(
                    "/api/groups/proxies/scale",
                    Some(serde_json::json!({"desired": 3})),
                )
                .await
                .fails(),
        );
        assert_eq!(code, 1);
        assert!(msg.contains("admin.token from the running up?"), "{msg}");

        let status: proxyfleet_admin::view::StatusView = api.get_json("/api/status").await.must();
        assert!(status.instances.is_empty());

        assert!(api.listening().await);
        api.post("/api/down", None).await.must();
        handle.wait().await;
        assert!(!api.listening().await);
    }

    #[tokio::test]
    async fn calls_prefer_the_socket_and_fall_back_to_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let (_fake, handle) = serve(dir.path()).await;
        let live_addr = std::fs::read_to_string(dir.path().join(ADDR_FILE)).unwrap();
        // The address file points at a dead port: only the socket can answer.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::fs::write(dir.path().join(ADDR_FILE), format!("{dead}\n")).unwrap();
        let api = Api::locate(dir.path()).must();
        let status: proxyfleet_admin::view::StatusView = api.get_json("/api/status").await.must();
        assert!(status.instances.is_empty());

        // No socket (another user's, or a path too long to bind): the TCP port answers.
        std::fs::write(dir.path().join(ADDR_FILE), live_addr).unwrap();
        let api = Api::locate(dir.path()).must();
        std::fs::remove_file(dir.path().join(SOCKET_FILE)).unwrap();
        let _: proxyfleet_admin::view::StatusView = api.get_json("/api/status").await.must();
        drop(handle);
    }

    #[test]
    fn encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode("proxies-a_1.x~"), "proxies-a_1.x~");
        assert_eq!(encode("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }

    #[test]
    fn table_pads_columns() {
        let t = table(
            &["ID", "ZONE", "NOTE"],
            &[
                vec!["i-1".into(), "a".into(), String::new()],
                vec!["i-22222".into(), "c".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID       ZONE  NOTE\ni-1      a\ni-22222  c     x\n");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(-1.0), "0s");
        assert_eq!(human_duration(45.9), "45s");
        assert_eq!(human_duration(187.0), "3m07s");
        assert_eq!(human_duration(7500.0), "2h05m");
        assert_eq!(human_duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
    }
}
