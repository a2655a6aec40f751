//! The harness of `proxy_smuggling.rs`: the strict origin (hyper, recording the raw bytes of
//! every connection), the raw origin of canned malformed replies, Squid as a child, and the
//! client that sends a case's bytes and reads responses the way a lenient client would.

use std::convert::Infallible;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use testkit::client::connect_from;
use testkit::process::Owned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::common::APP;

/// One request as the strict origin parsed it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: usize,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The whole body arrived (a proxy that gave up mid-body leaves this false).
    pub complete: bool,
}

#[derive(Debug, Default)]
pub struct OriginLog {
    pub requests: Vec<Seen>,
    /// Per connection: every byte read, and hyper's error if it refused the bytes.
    pub raw: Vec<Vec<u8>>,
    pub errors: Vec<(usize, String)>,
}

pub struct StrictOrigin {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<OriginLog>>,
    pub _runtime: tokio::runtime::Runtime,
}

/// A stream that appends what it reads to the origin's log.
pub struct Recorder {
    pub inner: tokio::net::TcpStream,
    pub log: Arc<Mutex<OriginLog>>,
    pub conn: usize,
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
    pub fn start(ip: &str) -> StrictOrigin {
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
    pub fn mark(&self) -> (usize, usize, usize) {
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
pub struct RawOrigin {
    pub addr: SocketAddr,
}

pub fn canned(name: &str) -> &'static [u8] {
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
    pub fn start(ip: &str) -> RawOrigin {
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

pub struct Squid {
    pub _child: Owned,
    pub _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

pub const SQUID: &str = "/usr/sbin/squid";

impl Squid {
    pub fn start() -> Result<Squid, String> {
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
pub struct ClientSaw {
    /// Status of every complete final response, in order (interim 1xx not counted).
    pub statuses: Vec<u16>,
    pub bodies: Vec<Vec<u8>>,
    /// Bytes after the last complete response that are not the start of one.
    pub junk: bool,
    /// A response had begun and was cut off.
    pub truncated: bool,
}

/// Parses as many complete responses from `buf` as there are. `closed`: the peer closed.
pub fn parse_responses(buf: &[u8], closed: bool, methods: &[&str]) -> ClientSaw {
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
pub fn client_exchange(
    proxy: SocketAddr,
    bytes: &[u8],
    want: usize,
    methods: &[&str],
) -> ClientSaw {
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
