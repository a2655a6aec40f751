//! Talking to etcd: JSON over HTTP/1.1 to its gRPC gateway, one connection per call, on
//! whichever member answers.
//!
//! A call that fails at the transport (refused, reset, timed out) or that the member cannot
//! serve (no quorum: gRPC `Unavailable`, `DeadlineExceeded`) moves on to the next member; the
//! member that answered last is tried first next time. Every try is bounded in time, and so
//! is the whole call: rounds over the members for at most [`TOTAL`], which rides out a raft
//! election. Answers are capped in size: nothing a member sends
//! can make this process hold more than [`MAX_BODY`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::wire::GatewayError;
use crate::store::StoreError;

/// The largest answer read (a snapshot range, one watch line).
pub const MAX_BODY: usize = 64 << 20;
/// Connecting to one member.
const CONNECT: Duration = Duration::from_millis(300);
/// One call on one member (a few milliseconds when it has a leader). A member without a
/// leader (an election under way, or no quorum) holds a write until its own request timeout,
/// seconds later; moving on to the next member soon gets the write through as soon as a
/// leader is elected (well under a second with tuned timers). A call that timed out may have
/// been applied after all: `EtcdStore` finds such a batch by its log key, never applying it
/// twice.
const CALL: Duration = Duration::from_millis(600);
/// One whole call: rounds over the members until it is up (an election with tuned timers
/// takes about a second; without quorum, the call fails after this).
const TOTAL: Duration = Duration::from_secs(3);
/// Between two rounds over the members.
const ROUND_PAUSE: Duration = Duration::from_millis(50);
/// A read that has no answer from one member within this is asked of the next too (a
/// healthy member answers within a few milliseconds).
pub(super) const HEDGE: Duration = Duration::from_millis(100);

pub(super) struct Client {
    endpoints: Vec<SocketAddr>,
    preferred: AtomicUsize,
}

/// Why one try on one member failed.
enum TryError {
    /// Another member may do better.
    Member(String),
    /// The request itself is wrong (any member would say so).
    Request(String),
}

pub(super) fn backend(what: &str, detail: String) -> StoreError {
    StoreError::Backend {
        what: what.to_string(),
        source: detail.into(),
    }
}

impl Client {
    pub fn new(endpoints: Vec<SocketAddr>) -> Client {
        Client {
            endpoints,
            preferred: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// The members in the order to try them: the last one that answered first.
    fn order(&self) -> impl Iterator<Item = (usize, SocketAddr)> + '_ {
        let first = self.preferred.load(Ordering::Relaxed);
        let n = self.endpoints.len();
        (0..n).map(move |k| {
            let i = (first + k) % n;
            (i, self.endpoints[i])
        })
    }

    /// A unary call: `POST path` with `body`, answered with `T`: the members one after
    /// another (a write is never sent to two at once), in rounds until one answers.
    pub async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, StoreError> {
        self.rounds(path, body, None).await
    }

    /// A read (a range: safe to ask twice): [`Client::call`], except that a member that has
    /// not answered within [`HEDGE`] is raced by the next, so that a silently dead member
    /// (which answers nothing until the connect times out) costs a tenth of a second, not
    /// the connect timeout — which is longer than some callers wait.
    pub async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, StoreError> {
        self.rounds(path, body, Some(HEDGE)).await
    }

    /// Rounds over the members (the last one that answered first) until one answers or
    /// [`TOTAL`] is up; within a round the next member is asked when one fails, or — with
    /// `hedge` — when one has not answered within it.
    async fn rounds<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        hedge: Option<Duration>,
    ) -> Result<T, StoreError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let text = body.to_string();
        let deadline = tokio::time::Instant::now() + TOTAL;
        loop {
            let mut failures = Vec::new();
            let mut waiting = self.order().collect::<Vec<_>>().into_iter();
            let mut tries = FuturesUnordered::new();
            let start = |(i, addr): (usize, SocketAddr)| {
                let text = &text;
                async move { (i, addr, try_member::<T>(addr, path, text).await) }
            };
            if let Some(first) = waiting.next() {
                tries.push(start(first));
            }
            while !tries.is_empty() {
                tokio::select! {
                    Some((i, addr, answer)) = tries.next() => match answer {
                        Ok(answer) => {
                            self.preferred.store(i, Ordering::Relaxed);
                            return Ok(answer);
                        }
                        Err(TryError::Request(e)) => return Err(backend(path, e)),
                        Err(TryError::Member(e)) => {
                            failures.push(format!("{addr}: {e}"));
                            if let Some(next) = waiting.next() {
                                tries.push(start(next));
                            }
                        }
                    },
                    () = tokio::time::sleep(hedge.unwrap_or_default()), if hedge.is_some() && waiting.len() > 0 => {
                        if let Some(next) = waiting.next() {
                            tries.push(start(next));
                        }
                    }
                }
            }
            // Every member failed: an election may be under way. Round again until the
            // call's time is up.
            if tokio::time::Instant::now() + ROUND_PAUSE >= deadline {
                return Err(backend(
                    path,
                    format!(
                        "no etcd member answered within {TOTAL:?}: {}",
                        failures.join("; ")
                    ),
                ));
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// A streaming call (watch, keep-alive): the body of the first member that accepts it,
    /// read line by line by the caller.
    pub async fn stream(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(SocketAddr, Lines), StoreError> {
        let text = body.to_string();
        let mut failures = Vec::new();
        for (i, addr) in self.order() {
            match tokio::time::timeout(CALL, send(addr, path, &text)).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok((addr, Lines::new(response.into_body())));
                }
                Ok(Ok(response)) => failures.push(format!("{addr}: HTTP {}", response.status())),
                Ok(Err(TryError::Member(e) | TryError::Request(e))) => {
                    failures.push(format!("{addr}: {e}"))
                }
                Err(_) => failures.push(format!("{addr}: no answer within {CALL:?}")),
            }
        }
        Err(backend(
            path,
            format!("no etcd member answered: {}", failures.join("; ")),
        ))
    }

    /// A streaming call to one member: its body's lines, once it answers with success
    /// within [`CALL`].
    pub async fn stream_one(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Lines, String> {
        match tokio::time::timeout(CALL, send(addr, path, &body.to_string())).await {
            Ok(Ok(response)) if response.status().is_success() => {
                Ok(Lines::new(response.into_body()))
            }
            Ok(Ok(response)) => Err(format!("HTTP {}", response.status())),
            Ok(Err(TryError::Member(e) | TryError::Request(e))) => Err(e),
            Err(_) => Err(format!("no answer within {CALL:?}")),
        }
    }

    /// The members in the order to try them (the last one that answered first).
    pub fn ordered(&self) -> Vec<(usize, SocketAddr)> {
        self.order().collect()
    }

    /// Member `i` answered: try it first next time.
    pub fn prefer(&self, i: usize) {
        self.preferred.store(i, Ordering::Relaxed);
    }

    /// One call to one member (`maintenance/status` of each, for health).
    pub async fn call_one<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, String> {
        match try_member(addr, path, &body.to_string()).await {
            Ok(t) => Ok(t),
            Err(TryError::Member(e) | TryError::Request(e)) => Err(e),
        }
    }
}

/// One unary call to one member, within [`CALL`].
async fn try_member<T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    text: &str,
) -> Result<T, TryError> {
    let attempt = async {
        let response = send(addr, path, text).await?;
        let status = response.status();
        let bytes = read_all(response.into_body()).await?;
        parse::<T>(status, &bytes)
    };
    tokio::time::timeout(CALL, attempt)
        .await
        .unwrap_or_else(|_| Err(TryError::Member(format!("no answer within {CALL:?}"))))
}

async fn send(
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> Result<hyper::Response<Incoming>, TryError> {
    let stream = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| TryError::Member(format!("connect timed out after {CONNECT:?}")))?
        .map_err(|e| TryError::Member(format!("connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| TryError::Member(format!("handshake: {e}")))?;
    // The connection's task ends when the response body is dropped or read to its end.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| TryError::Request(e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| TryError::Member(format!("request: {e}")))
}

async fn read_all(body: Incoming) -> Result<Bytes, TryError> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            TryError::Member(format!(
                "reading the answer (at most {MAX_BODY} bytes): {e}"
            ))
        })
}

/// gRPC codes a member says when another member may do better: Unavailable, DeadlineExceeded,
/// Unknown (etcd wraps "leader changed" and timeouts in it), Canceled.
fn retry_elsewhere(code: i32) -> bool {
    matches!(code, 1 | 2 | 4 | 14)
}

fn parse<T: DeserializeOwned>(status: hyper::StatusCode, bytes: &[u8]) -> Result<T, TryError> {
    if status.is_success() {
        return serde_json::from_slice(bytes).map_err(|e| {
            TryError::Request(format!("unexpected answer ({e}): {}", preview(bytes)))
        });
    }
    let error: GatewayError = serde_json::from_slice(bytes).unwrap_or_default();
    let detail = format!(
        "HTTP {status}: {} (gRPC code {})",
        error.message, error.code
    );
    if status.is_server_error() || retry_elsewhere(error.code) {
        Err(TryError::Member(detail))
    } else {
        Err(TryError::Request(detail))
    }
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

/// A streaming answer, one JSON object per line (the gateway's framing), each line capped.
pub(super) struct Lines {
    body: Incoming,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(body: Incoming) -> Lines {
        Lines {
            body,
            buffer: Vec::new(),
        }
    }

    /// The next line, `Ok(None)` at the end of the stream.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(end) = memchr(&self.buffer) {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = line.trim_ascii().to_vec();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        if self.buffer.len() > MAX_BODY {
                            return Err(format!("a line of over {MAX_BODY} bytes"));
                        }
                    }
                }
            }
        }
    }
}

fn memchr(buffer: &[u8]) -> Option<usize> {
    buffer.iter().position(|b| *b == b'\n')
}
