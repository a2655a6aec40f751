//! The admin API against hostile clients, over raw sockets: foreign Host names (DNS
//! rebinding), cross-origin calls and preflights, `admin.read_requires_token`, oversized
//! bodies, too many connections, silent and slow clients; and the Unix socket's rules.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{start, start_with, Running, SECRET, TIMEOUT};
use proxyfleet_admin::{Options, MAX_BODY, MAX_CONNECTIONS, MAX_REQUESTS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire: status, headers (lower-case names, repeated ones joined by
/// a newline), body.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Sends `request` as is on a connection of its own and reads the answer until the server
/// closes (requests here say `Connection: close`, or are refused, which closes too).
async fn raw(r: &Running, request: &str) -> Raw {
    raw_bytes(r, request.as_bytes()).await
}

async fn raw_bytes(r: &Running, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(r.admin.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    parse(&answer)
}

fn parse(answer: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        let v = v.trim().to_string();
        headers
            .entry(k.to_ascii_lowercase())
            .and_modify(|old| {
                old.push('\n');
                old.push_str(&v);
            })
            .or_insert(v);
    }
    Raw {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn no_cors(resp: &Raw, what: &str) {
    let cors: Vec<&String> = resp
        .headers
        .keys()
        .filter(|k| k.starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "{what}: CORS headers {cors:?}");
}

#[tokio::test]
async fn only_the_api_s_own_host_names_are_answered() {
    let r = start().await;
    let port = r.admin.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        format!("[::1]:{port}"),
        // Through a tunnel or port forward: another port, the same name.
        "localhost:8080".to_string(),
    ] {
        let resp = raw(&r, &get("/api/status", &host)).await;
        assert_eq!(resp.status, 200, "Host {host}: {}", resp.body);
    }
    // A rebinding attacker's page sends its own name; numeric tricks are not names of ours.
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "localhost.evil.example".to_string(),
        "127.0.0.2".to_string(),
        format!("2130706433:{port}"),
        "[::ffff:127.0.0.1]".to_string(),
        "localhost:notaport".to_string(),
    ] {
        for path in ["/api/status", "/", "/metrics", "/api/events", "/nothing"] {
            let resp = raw(&r, &get(path, &host)).await;
            assert_eq!(resp.status, 421, "Host {host} {path}: {}", resp.body);
            assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");
            assert!(
                resp.body.contains("DNS rebinding") && resp.body.contains(&format!("'{host}'")),
                "{}",
                resp.body
            );
        }
    }
    // A mutating call too, even with the right token: nothing is called.
    let post = format!(
        "POST /api/down HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        r.token
    );
    assert_eq!(raw(&r, &post).await.status, 421);
    // The absolute form names a host as well, and it wins over Host.
    let resp = raw(
        &r,
        &format!(
            "GET http://evil.example/api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(resp.status, 421, "{}", resp.body);
    // No Host: HTTP/1.1 requires one; HTTP/1.0 (which no browser speaks) may go without.
    let resp = raw(&r, "GET /api/status HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.body.contains("needs a Host header"), "{}", resp.body);
    let resp = raw(&r, "GET /api/status HTTP/1.0\r\n\r\n").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let two = format!(
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\
         Connection: close\r\n\r\n"
    );
    assert_eq!(raw(&r, &two).await.status, 400);
    assert!(r.fake.calls().is_empty(), "{:?}", r.fake.calls());
}

#[tokio::test]
async fn no_cors_headers_ever_and_preflights_get_none() {
    let r = start().await;
    let host = r.admin.addr.to_string();
    for path in [
        "/api/status",
        "/api/activity",
        "/metrics",
        "/",
        "/api/token",
    ] {
        let resp = raw(
            &r,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        no_cors(&resp, path);
    }
    for path in ["/api/down", "/api/groups/proxies/scale", "/api/status"] {
        let preflight = format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type\r\n\
             Connection: close\r\n\r\n"
        );
        let resp = raw(&r, &preflight).await;
        assert_eq!(resp.status, 204, "{path}: {resp:?}");
        assert_eq!(resp.headers["allow"], "GET, HEAD, POST");
        no_cors(&resp, path);
    }
    assert!(
        r.fake.calls().iter().all(|c| c.starts_with("activities")),
        "only reads: {:?}",
        r.fake.calls()
    );
}

#[tokio::test]
async fn mutating_calls_from_another_origin_are_refused_even_with_the_token() {
    let r = start().await;
    let host = r.admin.addr.to_string();
    let post = |origin: &str| {
        format!(
            "POST /api/groups/proxies/scale HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: 13\r\nConnection: close\r\n\r\n{{\"desired\":3}}",
            r.token
        )
    };
    for origin in [
        "http://evil.example",
        "null",
        "http://localhost:3000",
        &format!("https://{host}"),
    ] {
        let resp = raw(&r, &post(origin)).await;
        assert_eq!(resp.status, 403, "Origin {origin}: {}", resp.body);
        assert!(resp.body.contains("another origin"), "{}", resp.body);
        no_cors(&resp, origin);
    }
    assert!(r.fake.calls().is_empty(), "{:?}", r.fake.calls());
    // The console's own origin (and no Origin at all: the CLI) may.
    let resp = raw(&r, &post(&format!("http://{host}"))).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(r.fake.calls(), ["scale proxies 3"]);
}

#[tokio::test]
async fn reads_need_the_token_when_the_stack_says_so() {
    let r = start_with(Options {
        read_requires_token: true,
    })
    .await;
    let reads = [
        "/api/status",
        "/api/activity",
        "/api/history",
        "/api/events",
        "/metrics",
        "/api/stack",
    ];
    for path in reads {
        let resp = r.get(path).await;
        assert_eq!(resp.status, 401, "{path}: {}", resp.text());
        assert!(resp.error_message().contains("Bearer"), "{}", resp.text());
        // The event stream never ends: its head is read below.
        if path != "/api/events" {
            let body = r.get_with_token(path).await;
            assert_eq!(body.status, 200, "{path}: {}", body.text());
            assert!(!body.text().contains(SECRET), "{path}");
        }
    }
    assert!(
        r.fake.calls().iter().all(|c| c.starts_with("activities")),
        "{:?}",
        r.fake.calls()
    );
    // The event stream, with the bearer header or (EventSource) the query parameter.
    let host = r.admin.addr.to_string();
    let open = |target: String, auth: bool| {
        let auth = if auth {
            format!("Authorization: Bearer {}\r\n", r.token)
        } else {
            String::new()
        };
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n")
    };
    let head = |request: String| async move {
        let mut stream = TcpStream::connect(r.admin.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(
                n > 0,
                "closed before the head: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        parse(&got)
    };
    let resp = head(open("/api/events".into(), true)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "text/event-stream");
    let resp = head(open(format!("/api/events?access_token={}", r.token), false)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "text/event-stream");
    let resp = head(open(
        format!("/api/events?access_token={}", "f".repeat(64)),
        false,
    ))
    .await;
    assert_eq!(resp.status, 401);
    // The query parameter is for the event stream only.
    let resp = raw(
        &r,
        &get(&format!("/api/status?access_token={}", r.token), &host),
    )
    .await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    // The console's page and assets hold no data: they load, and ask for the token.
    for path in ["/", "/console/console.js", "/console/console.css"] {
        assert_eq!(r.get(path).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn reads_are_open_by_default_but_the_stack_file_is_not() {
    let r = start().await;
    for path in ["/api/status", "/api/activity", "/api/history", "/metrics"] {
        assert_eq!(r.get(path).await.status, 200, "{path}");
    }
    assert_eq!(r.get("/api/stack").await.status, 401);
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let r = start().await;
    let host = r.admin.addr.to_string();
    // Declared too long: refused before anything is read, with or without the token.
    let big = format!(
        "POST /api/groups/proxies/scale HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.token,
        MAX_BODY + 1
    );
    let resp = raw(&r, &big).await;
    assert_eq!(resp.status, 413, "{}", resp.body);
    let error: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(
        error["error"],
        format!("request body larger than {MAX_BODY} bytes")
    );
    // Chunked, growing past the limit: refused while reading.
    let mut chunked = format!(
        "POST /api/groups/proxies/scale HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        r.token
    )
    .into_bytes();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_bytes(&r, &chunked).await;
    assert_eq!(resp.status, 413, "{}", resp.body);
    // Just under the limit: read, and judged on what it says.
    let mut body = "{\"desired\":3}".to_string();
    body.push_str(&" ".repeat(MAX_BODY - body.len()));
    let fits = format!(
        "POST /api/groups/proxies/scale HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        r.token,
        body.len()
    );
    let resp = raw(&r, &fits).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(r.fake.calls(), ["scale proxies 3"]);
}

/// Opens a connection, asks `GET /api/history` once with keep-alive, reads the answer and
/// returns the connection, open and idle.
async fn served_once(r: &Running) -> TcpStream {
    let host = r.admin.addr;
    let mut stream = TcpStream::connect(host).await.unwrap();
    stream
        .write_all(format!("GET /api/history HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .expect("served")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    stream
}

/// Whether the server has closed `stream` within `limit` (reading and discarding).
async fn closes(stream: &mut TcpStream, limit: Duration) -> bool {
    closed_within(stream, limit).await.is_ok()
}

#[tokio::test]
async fn idle_connections_hold_no_request_slot_and_at_the_cap_the_longest_idle_makes_room() {
    assert!(
        testkit::process::raise_open_files(4 * MAX_CONNECTIONS as u64) > 2 * MAX_CONNECTIONS as u64
    );
    let r = start().await;
    // More kept-alive idle connections than there are request permits: a new request is
    // still answered at once.
    let mut kept = Vec::new();
    for _ in 0..MAX_REQUESTS + 8 {
        kept.push(served_once(&r).await);
    }
    let asked = tokio::time::Instant::now();
    let resp = r.get("/api/status").await;
    assert_eq!(resp.status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // Fill the connection cap with silent connections; `kept[0]` is now the longest idle.
    let mut silent = Vec::new();
    for _ in kept.len()..MAX_CONNECTIONS {
        silent.push(TcpStream::connect(r.admin.addr).await.unwrap());
    }
    // One over the cap: admitted and answered, and the longest idle made room for it.
    let asked = tokio::time::Instant::now();
    let resp = r.get("/api/status").await;
    assert_eq!(resp.status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        closes(&mut kept[0], Duration::from_secs(1)).await,
        "the longest idle connection was not the one closed"
    );
    // The youngest ones are untouched.
    for young in silent.iter_mut().rev().take(8) {
        assert!(
            !closes(young, Duration::from_millis(50)).await,
            "a young connection was closed"
        );
    }
}

/// Reads until the server closes `stream` (Ok) or `limit` passes (Err), discarding data.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Result<(), ()> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| ())
}

#[tokio::test]
async fn silent_and_idle_clients_are_cut_when_idle_slow_ones_at_the_head_timeout_streams_never() {
    use proxyfleet_admin::server::{HEAD_TIMEOUT, IDLE_TIMEOUT};
    let r = start().await;
    let host = r.admin.addr.to_string();
    let started = tokio::time::Instant::now();
    // A console's stream, which must outlive both timeouts.
    let mut stream = TcpStream::connect(r.admin.addr).await.unwrap();
    stream
        .write_all(format!("GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Connects and says nothing.
    let mut silent = TcpStream::connect(r.admin.addr).await.unwrap();
    // Sends a head a byte at a time, never finishing it: never idle, but never done.
    let mut slow = TcpStream::connect(r.admin.addr).await.unwrap();
    let slow_writer = tokio::spawn(async move {
        for b in b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Asks once, then keeps the connection open and idle.
    let mut idle = served_once(&r).await;
    let slack = Duration::from_secs(3);
    assert!(
        closes(&mut silent, IDLE_TIMEOUT + slack).await,
        "silent client kept"
    );
    assert!(closes(&mut idle, slack).await, "idle client kept");
    let idle_cut = started.elapsed();
    assert!(idle_cut >= IDLE_TIMEOUT, "cut after {idle_cut:?}");
    tokio::time::timeout(HEAD_TIMEOUT + slack, slow_writer)
        .await
        .expect("the slow client was cut")
        .unwrap();
    assert!(started.elapsed() >= HEAD_TIMEOUT - Duration::from_secs(1));
    // The stream is still live past the timeouts. Reading continuously, a read that
    // completes 2 s after the head timeout returns what was sent after the previous read,
    // i.e. after it.
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + TIMEOUT + HEAD_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("ticks keep coming")
            .unwrap();
        assert!(n > 0, "the stream was closed after {:?}", started.elapsed());
        let tick = String::from_utf8_lossy(&buf[..n]).contains("event: tick");
        if tick && started.elapsed() > HEAD_TIMEOUT + Duration::from_secs(2) {
            break;
        }
    }
}

/// Sends `request` on a connection of its own to the Unix socket and reads the answer
/// until the server closes.
async fn raw_unix(r: &Running, request: &str) -> Raw {
    let path = r.admin.socket.as_ref().expect("the socket listens");
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    parse(&answer)
}

#[tokio::test]
async fn the_unix_socket_is_owner_only_checks_no_host_and_keeps_the_token_rules() {
    use std::os::unix::fs::PermissionsExt;
    let r = start().await;
    let path = r.admin.socket.as_ref().unwrap().clone();
    assert_eq!(path, r.dir.path().join(proxyfleet_admin::SOCKET_FILE));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "only the owner may connect");

    // Any Host: no browser reaches a Unix socket, so there is no rebinding to guard against.
    let resp = raw_unix(&r, &get("/api/status", "evil.example")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    // The token rules are the TCP port's.
    let scale = |token: Option<&str>, origin: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        format!(
            "POST /api/groups/proxies/scale HTTP/1.1\r\nHost: localhost\r\n{auth}{origin}\
             Content-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n\
             {{\"desired\":3}}"
        )
    };
    assert_eq!(raw_unix(&r, &scale(None, None)).await.status, 401);
    assert_eq!(
        raw_unix(&r, &scale(Some(&"f".repeat(64)), None))
            .await
            .status,
        401
    );
    let foreign = raw_unix(&r, &scale(Some(&r.token), Some("http://evil.example"))).await;
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert!(r.fake.calls().is_empty(), "{:?}", r.fake.calls());
    assert_eq!(raw_unix(&r, &scale(Some(&r.token), None)).await.status, 200);
    assert_eq!(r.fake.calls(), ["scale proxies 3"]);
    assert_eq!(
        raw_unix(&r, &get("/api/stack", "localhost")).await.status,
        401
    );

    // A clean stop removes the socket.
    let resp = raw_unix(
        &r,
        &format!(
            "POST /api/down HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            r.token
        ),
    )
    .await;
    assert_eq!(resp.status, 200);
    let Running { admin, .. } = r;
    tokio::time::timeout(TIMEOUT, admin.wait()).await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn with_read_requires_token_the_socket_needs_it_for_reads_too() {
    let r = start_with(Options {
        read_requires_token: true,
    })
    .await;
    let resp = raw_unix(&r, &get("/api/status", "localhost")).await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    let with = format!(
        "GET /api/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        r.token
    );
    assert_eq!(raw_unix(&r, &with).await.status, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
    use proxyfleet_admin::server::{IDLE_TIMEOUT, STALL_TIMEOUT};
    let r = start().await;
    let host = r.admin.addr;
    // Pipelined requests for the console's script, never read: the answers fill the
    // socket buffers, and then nothing moves.
    let mut stream = TcpStream::connect(host).await.unwrap();
    let one = format!("GET /console/console.js HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let writer = async {
        loop {
            if stream.write_all(one.as_bytes()).await.is_err() {
                return;
            }
        }
    };
    let started = tokio::time::Instant::now();
    // Writing stops when the server stops reading (it waits for its writes); the
    // connection is closed then, and the write fails.
    let cut = tokio::time::timeout(STALL_TIMEOUT + Duration::from_secs(10), writer).await;
    let took = started.elapsed();
    println!("cut after {took:?}");
    assert!(cut.is_ok(), "a client that does not read was kept");
    assert!(
        took < IDLE_TIMEOUT + Duration::from_secs(10),
        "cut after {took:?}"
    );
}
