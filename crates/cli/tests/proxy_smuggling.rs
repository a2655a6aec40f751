//! Request framing, differential: ~120 hand-made requests (every framing rule of RFC 9112
//! that a proxy can get wrong, and the classic smuggling shapes) sent to the real
//! `proxyfleet proxy` and, when it is installed, to Debian's Squid 5.7 with the same origins.
//!
//! The origin that judges is hyper's HTTP/1.1 server — an independent, strict parser — on a
//! connection that records every byte it reads. For each case the client sends its bytes on
//! one connection (often followed by a second, pipelined request), reads every response,
//! and the test compares what came back and what reached the origin with what the case
//! requires. For proxyfleet it asserts the requirement and, for every case, that the origin
//! never saw a request the client did not send as one (no path `/smuggled`), never a parse
//! error, and never more requests than the client sent. Squid's outcome is recorded for the
//! same case; where Squid's behaviour is the specification the two must agree, and where
//! proxyfleet deliberately differs the case says why. A table of the differences is printed.
//!
//! A second, raw origin answers canned malformed responses, for the reply side: bad chunking,
//! conflicting lengths and bytes after a response must never reach a client as a second
//! response or leave its connection reusable.

mod common;

use std::convert::Infallible;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{base_config, start, APP};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use testkit::client::connect_from;
use testkit::process::Owned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// ---------------------------------------------------------------------------------------
// The strict origin: hyper, reading through a recorder.

/// One request as the strict origin parsed it.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The whole body arrived (a proxy that gave up mid-body leaves this false).
    complete: bool,
}

#[derive(Debug, Default)]
struct OriginLog {
    requests: Vec<Seen>,
    /// Per connection: every byte read, and hyper's error if it refused the bytes.
    raw: Vec<Vec<u8>>,
    errors: Vec<(usize, String)>,
}

struct StrictOrigin {
    addr: SocketAddr,
    log: Arc<Mutex<OriginLog>>,
    _runtime: tokio::runtime::Runtime,
}

/// A stream that appends what it reads to the origin's log.
struct Recorder {
    inner: tokio::net::TcpStream,
    log: Arc<Mutex<OriginLog>>,
    conn: usize,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.log.lock().unwrap().raw[this.conn].extend_from_slice(&buf.filled()[before..]);
        }
        result
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve(
    req: Request<Incoming>,
    log: Arc<Mutex<OriginLog>>,
    conn: usize,
) -> Result<Response<String>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let index = {
        let mut log = log.lock().unwrap();
        log.requests.push(Seen {
            conn,
            method,
            path: path.clone(),
            headers,
            body: Vec::new(),
            complete: false,
        });
        log.requests.len() - 1
    };
    let mut body = req.into_body();
    let mut data = Vec::new();
    let complete = loop {
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break true,
            Some(Ok(frame)) => {
                if let Ok(d) = frame.into_data() {
                    data.extend_from_slice(&d);
                }
            }
            Some(Err(_)) => break false,
        }
    };
    let len = data.len();
    {
        let mut log = log.lock().unwrap();
        log.requests[index].body = data;
        log.requests[index].complete = complete;
    }
    Ok(Response::new(format!(
        "origin saw {path} with {len} body bytes\n"
    )))
}

impl StrictOrigin {
    fn start(ip: &str) -> StrictOrigin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let log = Arc::new(Mutex::new(OriginLog::default()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((ip, 0)))
            .expect("bind strict origin");
        let addr = listener.local_addr().unwrap();
        let shared = log.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let conn = {
                    let mut l = shared.lock().unwrap();
                    l.raw.push(Vec::new());
                    l.raw.len() - 1
                };
                let log = shared.clone();
                tokio::spawn(async move {
                    let io = Recorder {
                        inner: stream,
                        log: log.clone(),
                        conn,
                    };
                    let service_log = log.clone();
                    let served = http1::Builder::new()
                        .serve_connection(
                            TokioIo::new(io),
                            service_fn(move |req| serve(req, service_log.clone(), conn)),
                        )
                        .await;
                    if let Err(e) = served {
                        log.lock().unwrap().errors.push((conn, e.to_string()));
                    }
                });
            }
        });
        StrictOrigin {
            addr,
            log,
            _runtime: runtime,
        }
    }

    /// (requests, errors, bytes read so far): a mark to take a case's share from.
    fn mark(&self) -> (usize, usize, usize) {
        let log = self.log.lock().unwrap();
        (
            log.requests.len(),
            log.errors.len(),
            log.raw.iter().map(Vec::len).sum(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// The raw origin: canned (malformed) responses, for the reply side.

/// Answers each request for `/raw/NAME` with the canned bytes of that name, then closes.
struct RawOrigin {
    addr: SocketAddr,
}

fn canned(name: &str) -> &'static [u8] {
    match name {
        "bare-lf-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nxx\r\n0\r\n\r\n",
        "lf-last-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxx\r\n0\n\n",
        "bad-chunk-later" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxx\r\nzz\r\n",
        "cl-and-te" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
        "two-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "same-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
        "connection-cl" => b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
        "connection-te" => b"HTTP/1.1 200 OK\r\nConnection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "gzip-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
        "http10-chunked" => b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
        "obs-fold" => b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nxx",
        "space-colon" => b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nxx",
        "ext-trailers" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        "extra-bytes" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED",
        "204-with-body" => b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED",
        "head-with-body" => b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED",
        "until-close" => b"HTTP/1.1 200 OK\r\n\r\nall of it until the close",
        "bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        "short-body" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    }
}

impl RawOrigin {
    fn start(ip: &str) -> RawOrigin {
        let listener = TcpListener::bind((ip, 0)).expect("bind raw origin");
        let addr = listener.local_addr().unwrap();
        // The listener thread ends with the test process; each connection is answered once.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split(' ').nth(1).unwrap_or("");
                    let name = path.rsplit('/').next().unwrap_or("");
                    let _ = stream.write_all(canned(name));
                });
            }
        });
        RawOrigin { addr }
    }
}

// ---------------------------------------------------------------------------------------
// Squid, as a child with its own configuration.

struct Squid {
    _child: Owned,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

const SQUID: &str = "/usr/sbin/squid";

impl Squid {
    fn start() -> Result<Squid, String> {
        if !std::path::Path::new(SQUID).exists() {
            return Err(format!("{SQUID} is not installed (Debian's squid package; scripts/test installs it as root)"));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // Squid started as root runs as user `proxy`, which must write its logs here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            probe.local_addr().unwrap().port()
        };
        let d = dir.path().display();
        // stdio logs and no pinger: `-N` then runs one process, no helpers to leak.
        let conf = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\n\
             access_log stdio:{d}/access.log squid\n\
             cache_store_log none\n\
             cache deny all\n\
             coredump_dir {d}\n\
             http_access allow all\n\
             visible_hostname squid.test\n\
             pinger_enable off\n\
             netdb_filename none\n\
             shutdown_lifetime 0 seconds\n\
             dns_nameservers 127.0.0.1\n\
             max_filedescriptors 1024\n"
        );
        let file = dir.path().join("squid.conf");
        std::fs::write(&file, conf).map_err(|e| e.to_string())?;
        let mut child = Owned::spawn(SQUID, &["-N", "-f", file.to_str().unwrap()]);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.has_exited() {
                return Err(format!(
                    "squid exited at start-up: {:?} {}",
                    child.stderr(),
                    std::fs::read_to_string(dir.path().join("cache.log")).unwrap_or_default()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err("squid did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Squid {
            _child: child,
            _dir: dir,
            addr,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The client: sends a case's bytes, reads responses the way a lenient client would.

#[derive(Debug, Clone, Default)]
struct ClientSaw {
    /// Status of every complete final response, in order (interim 1xx not counted).
    statuses: Vec<u16>,
    bodies: Vec<Vec<u8>>,
    /// Bytes after the last complete response that are not the start of one.
    junk: bool,
    /// A response had begun and was cut off.
    truncated: bool,
}

/// Parses as many complete responses from `buf` as there are. `closed`: the peer closed.
fn parse_responses(buf: &[u8], closed: bool, methods: &[&str]) -> ClientSaw {
    let mut saw = ClientSaw::default();
    let mut at = 0;
    let mut method_index = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if !rest.starts_with(b"HTTP/1.") {
            if rest.len() >= 7 || closed {
                saw.junk = true;
            }
            break;
        }
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            saw.truncated = closed;
            break;
        };
        let head = String::from_utf8_lossy(&rest[..end]).to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let field = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let mut pos = end + 4;
        if (100..200).contains(&status) {
            at += pos;
            continue;
        }
        let method = methods.get(method_index).copied().unwrap_or("GET");
        let body_len: Option<usize>;
        let mut body = Vec::new();
        if method == "HEAD" || status == 204 || status == 304 {
            body_len = Some(0);
        } else if field("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            // A lenient chunked reader: sizes up to LF, data, CRLF; trailers to the empty line.
            let mut p = pos;
            let mut done = false;
            while let Some(nl) = rest[p..].iter().position(|b| *b == b'\n') {
                let line = String::from_utf8_lossy(&rest[p..p + nl]).trim().to_string();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or(""), 16);
                p += nl + 1;
                match size {
                    Ok(0) => {
                        while let Some(nl) = rest[p..].iter().position(|b| *b == b'\n') {
                            let empty = rest[p..p + nl].iter().all(|b| *b == b'\r');
                            p += nl + 1;
                            if empty {
                                done = true;
                                break;
                            }
                        }
                        break;
                    }
                    Ok(n) if rest.len() >= p + n + 2 => {
                        body.extend_from_slice(&rest[p..p + n]);
                        p += n + 2;
                    }
                    _ => break,
                }
            }
            body_len = done.then_some(p - pos);
        } else if let Some(n) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body_len = (rest.len() >= pos + n).then_some(n);
            if body_len.is_some() {
                body = rest[pos..pos + n].to_vec();
            }
        } else {
            body_len = closed.then_some(rest.len() - pos);
            if closed {
                body = rest[pos..].to_vec();
            }
        }
        let Some(n) = body_len else {
            saw.truncated = closed;
            break;
        };
        if body.is_empty() && n > 0 {
            body = rest[pos..pos + n].to_vec();
        }
        pos += n;
        saw.statuses.push(status);
        saw.bodies.push(body);
        method_index += 1;
        at += pos;
    }
    saw
}

/// Sends `bytes` on one connection and reads until the proxy closes, or until `want`
/// responses came and nothing more arrived for a moment, or a deadline.
fn client_exchange(proxy: SocketAddr, bytes: &[u8], want: usize, methods: &[&str]) -> ClientSaw {
    let mut s = connect_from(APP, proxy);
    let _ = s.write_all(bytes);
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut buf = Vec::new();
    let mut last_data = Instant::now();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return parse_responses(&buf, true, methods),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_data = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return parse_responses(&buf, true, methods),
        }
        let saw = parse_responses(&buf, false, methods);
        let quiet = last_data.elapsed() > Duration::from_millis(250);
        if (saw.statuses.len() >= want && quiet) || Instant::now() > deadline {
            return saw;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cases.

/// What a case must come to: the client's final responses, and how many complete requests
/// reached the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    statuses: Vec<u16>,
    origin: usize,
}

impl Want {
    /// Whether `got` is this outcome. `or_cut`: a reply the proxy found malformed only after
    /// its head had gone out (which depends on how the origin's bytes were segmented) may
    /// instead end as a cut-off response and a closed connection.
    fn accepts(&self, got: &Observed, or_cut: bool) -> bool {
        let outcome = got.outcome();
        outcome == *self
            || (or_cut
                && outcome.statuses.is_empty()
                && outcome.origin == 0
                && got.client.truncated)
    }
}

/// Where Squid stands on a case. Agreement is judged on the verdict (was the first request
/// forwarded or refused, did anything get smuggled), not on the exact status: Squid refuses
/// a bad Content-Length with 411 where RFC 9112 says 400, and closes silently on a bad
/// chunked body where proxyfleet can still answer 400.
#[derive(Debug, Clone, Copy)]
enum SquidIs {
    /// Squid's behaviour is the specification here: the verdicts must agree.
    Spec,
    /// The verdicts must agree; the exact answers differ, for this reason.
    Agrees(&'static str),
    /// proxyfleet deliberately differs, and why (not asserted).
    Differs(&'static str),
}

struct Case {
    name: String,
    /// With `@O` for the strict origin's authority and `@R` for the raw origin's.
    send: String,
    want: Want,
    squid: SquidIs,
    /// Methods of the requests in order (for responses without a body).
    methods: Vec<&'static str>,
    /// Requests the client sent on purpose (the origin may see no more).
    sent: usize,
    /// See [`Want::accepts`].
    or_cut: bool,
}

fn want(statuses: &[u16], origin: usize) -> Want {
    Want {
        statuses: statuses.to_vec(),
        origin,
    }
}

struct Cases(Vec<Case>);

impl Cases {
    /// The path prefix of the next case: `/c007`.
    fn p(&self) -> String {
        format!("/c{:03}", self.0.len())
    }

    fn add(&mut self, name: &str, send: String, want: Want, squid: SquidIs) {
        let method = send.split(' ').next().unwrap_or("GET");
        let methods = vec![if method == "HEAD" { "HEAD" } else { "GET" }, "GET"];
        let sent = send.matches(" HTTP/1.").count() - send.matches("/smuggled HTTP/1.").count();
        self.0.push(Case {
            name: name.to_string(),
            send,
            want,
            squid,
            methods,
            sent,
            or_cut: false,
        });
    }
}

const CUT: &str = "the head had gone out when the body failed: the client sees a cut-off \
     reply and a close (proxyfleet answers 502 when nothing had been sent yet)";
const AFTER_ERROR: &str = "Squid keeps the client connection after its 502 and serves the \
     pipelined request; proxyfleet closes after every error page";

/// A request hidden inside a body: an origin that reads it is desynchronised.
fn smuggled(p: &str) -> String {
    format!("GET {p}/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// The pipelined second request most cases end with.
fn second(p: &str) -> String {
    format!("GET http://@O{p}/2 HTTP/1.1\r\nHost: x\r\n\r\n")
}

fn chunk_of(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

const REQUEST_ENTITIES: &str = "Squid's `request_entities off` (its default) refuses a GET or \
     HEAD with a Content-Length body (411); proxyfleet forwards it framed, as the issue asks";

fn cases() -> Vec<Case> {
    use SquidIs::{Agrees, Differs, Spec};
    let mut c = Cases(Vec::new());
    let ok2 = want(&[200, 200], 2);
    let ok1 = want(&[200], 1);
    let refused = |status| want(&[status], 0);

    // --- Connection never removes framing fields or Host.
    for (name, connection) in [
        ("Connection: Content-Length", "Content-Length"),
        (
            "Connection: keep-alive, Content-Length",
            "keep-alive, Content-Length",
        ),
        ("Connection: content-length (case)", "content-length"),
        ("Connection: Host", "Host"),
    ] {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nConnection: close, Content-Length\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add("Connection: close, Content-Length", send, ok1.clone(), Spec);
    }
    for (name, connection, expect) in [
        (
            "Connection: Transfer-Encoding",
            "Transfer-Encoding",
            ok2.clone(),
        ),
        (
            "Connection: close, Transfer-Encoding",
            "close, Transfer-Encoding",
            ok1.clone(),
        ),
        (
            "Connection: Content-Length, Transfer-Encoding",
            "Content-Length, Transfer-Encoding",
            ok2.clone(),
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nTransfer-Encoding: chunked\r\n\r\n{}{}",
            chunk_of(&smuggled(&p)),
            second(&p)
        );
        c.add(name, send, expect, Spec);
    }
    {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nProxy-Connection: Content-Length\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add("Proxy-Connection: Content-Length", send, ok2.clone(), Spec);
    }

    // --- Chunked syntax: CRLF only, no white space after the size, no overflow.
    let bad_bodies: &[(&str, &str)] = &[
        ("bare LF after the chunk size", "2\nxx\r\n0\r\n\r\n"),
        ("bare LF ending a chunk extension", "2;a\nxx\r\n0\r\n\r\n"),
        ("bare CR in the chunk-size line", "2\rxx\r\n0\r\n\r\n"),
        ("bare LF after chunk data", "2\r\nxx\n0\r\n\r\n"),
        ("bare CR after chunk data", "2\r\nxx\r0\r\n\r\n"),
        ("no CRLF after chunk data", "2\r\nxxx\r\n0\r\n\r\n"),
        ("chunk shorter than its size", "3\r\nxx\r\n0\r\n\r\n"),
        ("last chunk 0 LF LF", "2\r\nxx\r\n0\n\n"),
        ("last chunk 0 CRLF LF", "2\r\nxx\r\n0\r\n\n"),
        ("last chunk 0 LF CRLF", "2\r\nxx\r\n0\n\r\n"),
        ("trailer ended by a bare LF", "2\r\nxx\r\n0\r\nX-T: 1\n\r\n"),
        (
            "trailer with a bare CR",
            "2\r\nxx\r\n0\r\nX-T: 1\rX\r\n\r\n",
        ),
        (
            "obs-fold in a trailer",
            "2\r\nxx\r\n0\r\nX-T: 1\r\n folded\r\n\r\n",
        ),
        ("trailer without a colon", "2\r\nxx\r\n0\r\nX-T\r\n\r\n"),
        ("space after the chunk size", "2 \r\nxx\r\n0\r\n\r\n"),
        ("tab after the chunk size", "2\t\r\nxx\r\n0\r\n\r\n"),
        (
            "space before a chunk extension",
            "2 ;a=b\r\nxx\r\n0\r\n\r\n",
        ),
        ("space after the last chunk's size", "2\r\nxx\r\n0 \r\n\r\n"),
        ("0x prefix on the chunk size", "0x2\r\nxx\r\n0\r\n\r\n"),
        ("negative chunk size", "-2\r\nxx\r\n0\r\n\r\n"),
        ("plus sign on the chunk size", "+2\r\nxx\r\n0\r\n\r\n"),
        ("empty chunk size", "\r\nxx\r\n0\r\n\r\n"),
        ("non-hex chunk size", "g\r\nxx\r\n0\r\n\r\n"),
        (
            "chunk size over 64 bits",
            "1ffffffffffffffff\r\nxx\r\n0\r\n\r\n",
        ),
        (
            "chunk size over int64",
            "8000000000000000\r\nxx\r\n0\r\n\r\n",
        ),
        (
            "control byte in a chunk extension",
            "2;a\x01b\r\nxx\r\n0\r\n\r\n",
        ),
    ];
    for (name, body) in bad_bodies {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{}",
            second(&p)
        );
        let squid = match *name {
            "space after the chunk size"
            | "tab after the chunk size"
            | "space before a chunk extension"
            | "space after the last chunk's size" => Differs(
                "Squid accepts BWS after the size (RFC 9112's chunk-ext grammar allows BWS \
                 before ';'); proxyfleet refuses it: a hop that does not would read the body \
                 differently, and no real client sends it",
            ),
            "last chunk 0 CRLF LF"
            | "trailer ended by a bare LF"
            | "trailer with a bare CR"
            | "obs-fold in a trailer"
            | "trailer without a colon" => Differs(
                "Squid 5.7 reads the trailer section leniently (bare LF, bare CR, folding, a \
                 line without a colon) and drops it; proxyfleet parses trailers as strictly \
                 as a head (RFC 9112 §7.1.2) and refuses the body",
            ),
            _ => Agrees(
                "Squid closes the connection without a response; proxyfleet answers 400 \
                 (nothing had been answered yet)",
            ),
        };
        c.add(name, send, refused(400), squid);
    }
    // Valid chunked bodies, re-chunked on the way.
    let good_bodies: &[(&str, &str)] = &[
        (
            "chunk extensions (dropped)",
            "2;name=value\r\nxx\r\n3;a;b=\"q s\"\r\nyyy\r\n0;last\r\n\r\n",
        ),
        (
            "trailer fields (dropped)",
            "2\r\nxx\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
        ),
        ("upper-case hex size", "A\r\n0123456789\r\n0\r\n\r\n"),
        ("leading zeros in sizes", "0002\r\nxx\r\n000\r\n\r\n"),
        (
            "many one-byte chunks",
            "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n1\r\nd\r\n0\r\n\r\n",
        ),
        ("empty chunked body", "0\r\n\r\n"),
        ("a request hidden in chunk data", "HIDDEN"),
    ];
    for (name, body) in good_bodies {
        let p = c.p();
        let body = body.replace("HIDDEN", &chunk_of(&smuggled(&p)));
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{}",
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }

    // --- Transfer-Encoding values: only a lone `chunked`.
    let codings: &[(&str, &str, u16)] = &[
        (
            "TE identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n",
            501,
        ),
        (
            "TE gzip, chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            501,
        ),
        (
            "TE chunked, gzip",
            "Transfer-Encoding: chunked, gzip\r\n",
            501,
        ),
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
            501,
        ),
        (
            "TE chunked, chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
            501,
        ),
        (
            "TE chunked twice (two fields)",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
        (
            "TE chunked then TE x",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
            501,
        ),
        ("TE xchunked", "Transfer-Encoding: xchunked\r\n", 501),
        ("TE chunked;q=1", "Transfer-Encoding: chunked;q=1\r\n", 501),
        (
            "TE \"chunked\" (quoted)",
            "Transfer-Encoding: \"chunked\"\r\n",
            501,
        ),
        ("TE empty", "Transfer-Encoding:\r\n", 501),
        (
            "TE , chunked (empty element)",
            "Transfer-Encoding: , chunked\r\n",
            501,
        ),
        (
            "TE with space before the colon",
            "Transfer-Encoding : chunked\r\n",
            400,
        ),
        (
            "TE with tab before the colon",
            "Transfer-Encoding\t: chunked\r\n",
            400,
        ),
        (
            "TE folded onto a second line",
            "Transfer-Encoding:\r\n chunked\r\n",
            400,
        ),
        (
            "TE with a vertical tab",
            "Transfer-Encoding: \x0bchunked\r\n",
            400,
        ),
    ];
    for (name, field, status) in codings {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{field}\r\n{}{}",
            chunk_of("hello"),
            second(&p)
        );
        let squid = match *name {
            "TE folded onto a second line" => Differs(
                "Squid unfolds obs-fold and reads `chunked`; RFC 9112 §5.2 lets a proxy refuse \
                 a folded field with 400, and a folded framing field is a smuggling vector",
            ),
            "TE with a vertical tab" => Differs(
                "Squid takes VT for white space; it is a control character, not OWS (RFC 9110 \
                 §5.5), so proxyfleet (httparse) refuses the field",
            ),
            _ => Spec,
        };
        c.add(name, send, refused(*status), squid);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello{}",
            second(&p)
        );
        c.add(
            "TE identity (with a length)",
            send,
            refused(501),
            Differs(
                "Squid 5.7 still drops a lone `identity` (RFC 2616's no-op coding, gone since \
                 RFC 7230) and frames by Content-Length; proxyfleet refuses every coding but a \
                 lone `chunked` with 501",
            ),
        );
    }
    for (name, field) in [
        ("TE Chunked (case)", "Transfer-Encoding: Chunked\r\n"),
        (
            "TE with no space after the colon",
            "Transfer-Encoding:chunked\r\n",
        ),
        (
            "TE with tabs around the value",
            "Transfer-Encoding:\tchunked\t\r\n",
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{field}\r\n{}{}",
            chunk_of(&smuggled(&p)),
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }
    {
        // Not a Transfer-Encoding at all: the chunked-looking bytes are the next request.
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n{}",
            second(&p)
        );
        c.add(
            "Transfer_Encoding (another field)",
            send,
            want(&[200, 400], 1),
            Spec,
        );
    }

    // --- Transfer-Encoding with Content-Length: the coding wins, the length is removed,
    // and the connection closes after the response (RFC 9112 §6.3), as Squid does.
    for (name, fields, body) in [
        (
            "CL.TE: length first",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\nG".to_string(),
        ),
        (
            "TE.CL: coding first",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "8\r\nSMUGGLED\r\n0\r\n\r\n".to_string(),
        ),
        (
            "TE with a bad length",
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
            "0\r\n\r\n".to_string(),
        ),
        (
            "TE with two lengths",
            "Transfer-Encoding: chunked\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
            "0\r\n\r\n".to_string(),
        ),
        (
            "TE hiding a request from CL",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            chunk_of("GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\n{body}{}",
            second(&p)
        );
        c.add(
            name,
            send,
            ok1.clone(),
            Agrees(
                "both let the coding win and remove the length; Squid then keeps the \
                 connection for the pipelined request, proxyfleet closes it as RFC 9112 §6.3 \
                 requires after such a request",
            ),
        );
    }

    // --- Content-Length values.
    for (name, fields, status) in [
        (
            "two different lengths",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            400,
        ),
        (
            "a list of different lengths",
            "Content-Length: 5, 6\r\n",
            400,
        ),
        ("length with a plus sign", "Content-Length: +5\r\n", 400),
        ("negative length", "Content-Length: -5\r\n", 400),
        ("space inside the length", "Content-Length: 5 5\r\n", 400),
        ("hex length", "Content-Length: 0x5\r\n", 400),
        ("length with letters", "Content-Length: 5a\r\n", 400),
        ("empty length", "Content-Length:\r\n", 400),
        (
            "length with a trailing comma",
            "Content-Length: 5,\r\n",
            400,
        ),
        (
            "length over int64",
            "Content-Length: 99999999999999999999\r\n",
            400,
        ),
        (
            "length with space before the colon",
            "Content-Length : 5\r\n",
            400,
        ),
        (
            "length folded onto a second line",
            "Content-Length: 5\r\n 5\r\n",
            400,
        ),
        (
            "length with a decimal point",
            "Content-Length: 5.0\r\n",
            400,
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\nhello{}",
            second(&p)
        );
        let squid = match name {
            "length with a trailing comma" => Differs(
                "Squid skips the empty list element and reads 5; RFC 9110 §8.6 allows only a \
                 list of identical numbers, so proxyfleet refuses",
            ),
            "length with space before the colon" => Spec,
            _ => Agrees("Squid answers 411 Length Required, proxyfleet 400 (RFC 9112 §6.3)"),
        };
        c.add(name, send, refused(status), squid);
    }
    for (name, fields) in [
        (
            "identical lengths merged (two fields)",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        (
            "identical lengths merged (a list)",
            "Content-Length: 5, 5\r\n",
        ),
        ("length with leading zeros", "Content-Length: 0005\r\n"),
        ("length with surrounding tabs", "Content-Length:\t5\t\r\n"),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\nhello{}",
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }

    // --- Bodies on any method are forwarded framed.
    for method in ["GET", "OPTIONS", "DELETE", "PUT", "PATCH"] {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "{method} http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        let squid = if method == "GET" {
            Differs(REQUEST_ENTITIES)
        } else {
            Spec
        };
        c.add(
            &format!("{method} with a length body"),
            send,
            ok2.clone(),
            squid,
        );
    }
    for method in ["GET", "HEAD"] {
        let p = c.p();
        let send = format!(
            "{method} http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}{}",
            chunk_of(&smuggled(&p)),
            second(&p)
        );
        c.add(
            &format!("{method} with a chunked body"),
            send,
            ok2.clone(),
            Spec,
        );
    }
    {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "HEAD http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add(
            "HEAD with a length body",
            send,
            ok2.clone(),
            Differs(REQUEST_ENTITIES),
        );
    }

    // --- Head syntax.
    for (name, fields) in [
        ("obs-fold in a field", "X-A: 1\r\n folded\r\n"),
        ("obs-fold with a tab", "X-A: 1\r\n\tfolded\r\n"),
        ("space before the colon", "X-A : 1\r\n"),
        ("a field line without a colon", "X-A\r\n"),
        ("an empty field name", ": 1\r\n"),
        ("a bracket in a field name", "X(A): 1\r\n"),
        ("a bare CR inside a value", "X-A: 1\r2\r\n"),
        ("a NUL inside a value", "X-A: 1\x002\r\n"),
        ("white space before the first field", " X-A: 1\r\n"),
    ] {
        let p = c.p();
        let send = format!(
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\n{}",
            second(&p)
        );
        let squid = match name {
            "obs-fold in a field" | "obs-fold with a tab" => Differs(
                "Squid's relaxed_header_parser unfolds obs-fold; RFC 9112 §5.2 lets a proxy \
                 refuse it with 400 and proxyfleet does (a folded framing field is a \
                 smuggling vector)",
            ),
            "space before the colon" => Differs(
                "Squid's relaxed parser drops or accepts such fields; RFC 9112 §5.1 requires \
                 400 from a server and removal from a proxy — proxyfleet refuses",
            ),
            "a bare CR inside a value" => Differs(
                "Squid accepts a bare CR inside a value; RFC 9112 §2.2 requires a recipient to \
                 treat it as invalid or replace it, and proxyfleet refuses",
            ),
            "white space before the first field" => Differs(
                "Squid ignores the white space; RFC 9112 §2.2 says to reject or skip that line, \
                 and proxyfleet rejects",
            ),
            _ => Spec,
        };
        c.add(name, send, refused(400), squid);
    }
    for (name, head) in [
        (
            "two spaces in the request line",
            "GET  http://@O/1 HTTP/1.1\r\n",
        ),
        ("lower-case version", "GET http://@O/1 http/1.1\r\n"),
        ("version 1.2", "GET http://@O/1 HTTP/1.2\r\n"),
        ("a space after the version", "GET http://@O/1 HTTP/1.1 \r\n"),
        ("no version (HTTP/0.9)", "GET http://@O/1\r\n"),
    ] {
        let p = c.p();
        let head = head
            .replace("/1 ", &format!("{p}/1 "))
            .replace("/1\r", &format!("{p}/1\r"));
        let send = format!("{head}Host: x\r\n\r\n{}", second(&p));
        let squid = match name {
            "two spaces in the request line" | "a space after the version" => Differs(
                "Squid's relaxed_header_parser accepts extra spaces in the request line; \
                 proxyfleet (httparse) refuses",
            ),
            "version 1.2" => {
                Differs("Squid answers 505 for an unknown minor version; proxyfleet 400")
            }
            "lower-case version" => Differs(
                "Squid accepts `http/1.1`; the version is case-sensitive (RFC 9112 §2.3), so \
                 proxyfleet refuses",
            ),
            "no version (HTTP/0.9)" => Differs("Squid treats it as HTTP/0.9; proxyfleet refuses"),
            _ => Spec,
        };
        c.add(name, send, refused(400), squid);
    }
    for (name, send_head) in [
        (
            "bare LF line ends in the head",
            "GET http://@O{p}/1 HTTP/1.1\nHost: x\nX-A: 1\n\n",
        ),
        (
            "mixed CRLF and LF in the head",
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
        ),
        (
            "obs-text in a value",
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nX-A: caf\u{e9}\r\n\r\n",
        ),
        (
            "a long field",
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nX-Long: LONG\r\n\r\n",
        ),
    ] {
        let p = c.p();
        let head = send_head
            .replace("{p}", &p)
            .replace("LONG", &"a".repeat(6000));
        let send = format!("{head}{}", second(&p));
        c.add(name, send, ok2.clone(), Spec);
    }

    // --- Expect.
    for (name, field, expect) in [
        (
            "Expect: 100-continue",
            "Expect: 100-continue\r\n",
            ok2.clone(),
        ),
        (
            "Expect: 100-Continue (case)",
            "Expect: 100-Continue\r\n",
            ok2.clone(),
        ),
        ("Expect: foo", "Expect: foo\r\n", refused(417)),
        (
            "Expect: 100-continue, foo",
            "Expect: 100-continue, foo\r\n",
            refused(417),
        ),
        ("Expect empty", "Expect:\r\n", refused(417)),
        (
            "Expect twice",
            "Expect: 100-continue\r\nExpect: 100-continue\r\n",
            refused(417),
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{field}Content-Length: 5\r\n\r\nhello{}",
            second(&p)
        );
        c.add(name, send, expect, Spec);
    }

    // --- HTTP/1.0.
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello{}",
            second(&p)
        );
        c.add("HTTP/1.0 with a length body", send, ok1.clone(), Spec);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhelloGET http://@O{p}/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        );
        c.add(
            "HTTP/1.0 keep-alive with a body, pipelined",
            send,
            ok2.clone(),
            Spec,
        );
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
        );
        c.add("HTTP/1.0 with Expect (ignored)", send, ok1.clone(), Spec);
    }
    for (name, fields) in [
        ("HTTP/1.0 with chunked", "Transfer-Encoding: chunked\r\n"),
        (
            "HTTP/1.0 with chunked and a length",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nConnection: keep-alive\r\n{fields}\r\n{}{}",
            chunk_of("hello"),
            second(&p)
        );
        c.add(
            name,
            send,
            refused(400),
            Differs(
                "RFC 9112 §6.1: a Transfer-Encoding in an HTTP/1.0 message is faulty framing; \
                 Squid decodes it as chunked",
            ),
        );
    }

    // --- Pipelining.
    {
        let p = c.p();
        let send = format!(
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n\r\n{}",
            second(&p)
        );
        c.add("two GETs pipelined", send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}POST http://@O{p}/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            chunk_of("abc")
        );
        c.add("chunked then length, pipelined", send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n{}",
            second(&p)
        );
        c.add("zero length, then pipelined", send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let body = "x".repeat(100_000);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{}",
            body.len(),
            second(&p)
        );
        c.add("one 100 KB chunk", send, ok2.clone(), Spec);
    }

    // --- Reply side: malformed responses from the raw origin, then a pipelined request to
    // the strict one. A reply the proxy cannot frame the way the client will is refused
    // (502) or cut off with the connection closed, never followed by anything.
    for (name, raw, expect, squid) in [
        ("reply: bare LF in chunk size", "bare-lf-chunk", want(&[502], 0), Agrees(CUT)),
        ("reply: last chunk 0 LF LF", "lf-last-chunk", want(&[502], 0), Agrees(CUT)),
        ("reply: bad chunk after data", "bad-chunk-later", want(&[502], 0), Agrees(CUT)),
        ("reply: CL and TE", "cl-and-te", want(&[502], 0), Differs("Squid lets TE win in replies too; proxyfleet refuses the ambiguous reply")),
        ("reply: two lengths", "two-lengths", want(&[502], 0), Agrees(AFTER_ERROR)),
        ("reply: identical lengths", "same-lengths", want(&[200, 200], 1), Spec),
        ("reply: Connection: Content-Length", "connection-cl", want(&[200, 200], 1), Differs("Squid removes the Content-Length that the reply's Connection names and sends the body unframed on a kept-alive connection: the client cannot tell where it ends (a reply-side desync)")),
        ("reply: Connection: close, Transfer-Encoding", "connection-te", want(&[200, 200], 1), Spec),
        ("reply: gzip, chunked", "gzip-chunked", want(&[502], 0), Differs("Squid relays codings it does not decode; proxyfleet refuses them")),
        ("reply: HTTP/1.0 with chunked", "http10-chunked", want(&[502], 0), Differs("RFC 9112 §6.1: faulty framing; Squid decodes it")),
        ("reply: obs-fold", "obs-fold", want(&[502], 0), Differs("Squid unfolds; proxyfleet refuses")),
        ("reply: space before colon", "space-colon", want(&[502], 0), Differs("Squid's relaxed parser accepts; proxyfleet refuses")),
        ("reply: extensions and trailers", "ext-trailers", want(&[200, 200], 1), Spec),
        ("reply: bytes after the body", "extra-bytes", want(&[200, 200], 1), Spec),
        ("reply: 204 with a body", "204-with-body", want(&[204, 200], 1), Differs("Squid 5.7 passes the bytes an origin sends after a 204 to the client, where they read as a second response (response splitting); proxyfleet drops them with the origin connection")),
        ("reply: HEAD answered with a body", "head-with-body", want(&[200, 200], 1), Spec),
        ("reply: until close", "until-close", want(&[200], 0), Agrees("Squid re-chunks a close-delimited reply and keeps the client connection; proxyfleet ends it by closing, as the origin did")),
        ("reply: bad length", "bad-length", want(&[502], 0), Agrees(AFTER_ERROR)),
        ("reply: body shorter than its length", "short-body", want(&[502], 0), Agrees(CUT)),
    ] {
        let p = c.p();
        let method = if raw == "head-with-body" { "HEAD" } else { "GET" };
        let send = format!(
            "{method} http://@R{p}/raw/{raw} HTTP/1.1\r\nHost: x\r\n\r\n{}",
            second(&p)
        );
        let cut = matches!(raw, "bare-lf-chunk" | "lf-last-chunk" | "bad-chunk-later" | "short-body");
        c.add(name, send, expect, squid);
        c.0.last_mut().unwrap().or_cut = cut;
        // The raw origin is not the strict one: only the pipelined request counts there.
        c.0.last_mut().unwrap().sent = 1;
    }
    c.0
}

// ---------------------------------------------------------------------------------------
// Running a column.

#[derive(Debug, Clone)]
struct Observed {
    client: ClientSaw,
    /// Complete requests the strict origin read during the case.
    origin: Vec<Seen>,
    /// Requests it began to read (head parsed).
    origin_heads: usize,
    origin_errors: Vec<String>,
}

impl Observed {
    fn outcome(&self) -> Want {
        Want {
            statuses: self.client.statuses.clone(),
            origin: self.origin.iter().filter(|s| s.complete).count(),
        }
    }

    /// Whether the first request was forwarded (a 2xx/3xx came back) or refused (an error,
    /// or nothing), and whether anything was smuggled.
    fn verdict(&self) -> (bool, bool) {
        let forwarded = self
            .client
            .statuses
            .first()
            .is_some_and(|s| (200..400).contains(s));
        (forwarded, self.smuggled())
    }

    fn smuggled(&self) -> bool {
        self.origin.iter().any(|s| s.path.contains("smuggled"))
            || self
                .client
                .bodies
                .iter()
                .any(|b| b.windows(8).any(|w| w == b"SMUGGLED"))
    }

    fn short(&self) -> String {
        let mut s = format!(
            "{:?} origin {}",
            self.client.statuses,
            self.outcome().origin
        );
        if self.client.truncated {
            s.push_str(" cut");
        }
        if self.client.junk {
            s.push_str(" JUNK");
        }
        if self.smuggled() {
            s.push_str(" SMUGGLED");
        }
        if !self.origin_errors.is_empty() {
            s.push_str(" origin-error");
        }
        s
    }
}

fn run_column(
    proxy: SocketAddr,
    cases: &[Case],
    origin: &StrictOrigin,
    raw: &RawOrigin,
) -> Vec<Observed> {
    let o = origin.addr.to_string();
    let r = raw.addr.to_string();
    let mut out = Vec::new();
    for case in cases {
        let bytes = case.send.replace("@O", &o).replace("@R", &r);
        let (req0, err0, _) = origin.mark();
        let client = client_exchange(
            proxy,
            bytes.as_bytes(),
            case.want.statuses.len(),
            &case.methods,
        );
        // Whatever the proxy still passes on arrives within a moment: wait until the origin
        // has read nothing new for a while.
        let mut last = origin.mark().2;
        let mut since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(2);
        while since.elapsed() < Duration::from_millis(150) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let now = origin.mark().2;
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        let log = origin.log.lock().unwrap();
        let seen: Vec<Seen> = log.requests[req0..].to_vec();
        out.push(Observed {
            client,
            origin_heads: seen.len(),
            origin: seen,
            origin_errors: log.errors[err0..].iter().map(|(_, e)| e.clone()).collect(),
        });
    }
    out
}

#[test]
fn request_framing_differential_with_squid() {
    let cases = cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());

    let origin = StrictOrigin::start("127.30.0.93");
    let raw = RawOrigin::start("127.30.0.94");
    let proxy = start(&base_config("http_access allow app\nhttp_access deny all"));
    let (squid_origin, squid_raw) = (
        StrictOrigin::start("127.30.0.95"),
        RawOrigin::start("127.30.0.96"),
    );
    let squid = Squid::start();

    // The two columns run at the same time: each has its own origins.
    let (ours, theirs) = std::thread::scope(|s| {
        let theirs = s.spawn(|| {
            squid
                .as_ref()
                .ok()
                .map(|sq| run_column(sq.addr, &cases, &squid_origin, &squid_raw))
        });
        let ours = run_column(proxy.addr(), &cases, &origin, &raw);
        (ours, theirs.join().unwrap())
    });

    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let got = &ours[i];
        let mut problems = Vec::new();
        if !case.want.accepts(got, case.or_cut) {
            problems.push(format!("wanted {:?}", case.want));
        }
        if got.smuggled() {
            problems.push("a smuggled request or response got through".into());
        }
        if got.client.junk {
            problems.push("the client read bytes that are not a response".into());
        }
        if got.origin_heads > case.sent {
            problems.push(format!(
                "the origin saw {} requests, the client sent {}",
                got.origin_heads, case.sent
            ));
        }
        let body_refused = case.want.statuses == [400] && got.origin_heads == 1;
        if !got.origin_errors.is_empty() && !body_refused {
            problems.push(format!("origin parse error: {:?}", got.origin_errors));
        }
        for seen in &got.origin {
            let lengths = seen
                .headers
                .iter()
                .filter(|(n, _)| n == "content-length")
                .count();
            let coded = seen.headers.iter().any(|(n, _)| n == "transfer-encoding");
            if lengths > 1 || (lengths == 1 && coded) {
                problems.push(format!("origin got framing fields {:?}", seen.headers));
            }
            if case.want.statuses.first() == Some(&200) && seen.method.is_empty() {
                problems.push(format!(
                    "origin request on connection {} without a method",
                    seen.conn
                ));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {i} {:?}: got {}; {}\n  sent {:?}",
                case.name,
                got.short(),
                problems.join("; "),
                case.send
            ));
        }
        let squid_cell = match &theirs {
            None => "SKIPPED".to_string(),
            Some(cols) => cols[i].short(),
        };
        let same = theirs
            .as_ref()
            .map(|cols| cols[i].outcome() == got.outcome());
        if let Some(cols) = &theirs {
            let asserted = !matches!(case.squid, SquidIs::Differs(_));
            if asserted && (cols[i].verdict() != got.verdict() || cols[i].smuggled()) {
                failures.push(format!(
                    "case {i} {:?}: Squid is the specification here and answered {}, proxyfleet {}",
                    case.name,
                    cols[i].short(),
                    got.short()
                ));
            }
        }
        if same == Some(false) {
            let why = match case.squid {
                SquidIs::Differs(why) | SquidIs::Agrees(why) => why,
                SquidIs::Spec => "(same verdict)",
            };
            table.push(format!(
                "{i:3} {:45} | {:32} | {:32} | {why}",
                case.name,
                got.short(),
                squid_cell
            ));
        }
    }
    match &squid {
        Ok(_) => println!(
            "{} cases; {} where Squid 5.7 and proxyfleet differ:\n{:3} {:45} | {:32} | {:32} | why\n{}",
            cases.len(),
            table.len(),
            "#",
            "case",
            "proxyfleet",
            "squid",
            table.join("\n")
        ),
        Err(why) => println!("SKIPPED: the Squid column ({why}); proxyfleet tested alone"),
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
