//! The web console's routes over real HTTP: the page and its embedded assets, the five
//! minutes of history, the event stream (and that it ends when the server stops), the token
//! check. The browser itself is driven in crates/cli/tests/console.rs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{keys, set, start, Running, TIMEOUT};
use proxyfleet_admin::view::{HistoryView, TickView};
use proxyfleet_admin::MAX_STREAMS;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const INDEX: &str = include_str!("../src/console/index.html");
const JS: &str = include_str!("../src/console/console.js");
const CSS: &str = include_str!("../src/console/console.css");
const SVG: &str = include_str!("../src/console/icon.svg");

/// A GET on a connection of its own; the status, the headers (lower-case names) and the body.
async fn fetch(r: &Running, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(r.admin.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let r = start().await;
    let cases = [
        ("/", "text/html; charset=utf-8", INDEX),
        ("/console/console.js", "text/javascript; charset=utf-8", JS),
        ("/console/console.css", "text/css; charset=utf-8", CSS),
        ("/console/icon.svg", "image/svg+xml", SVG),
    ];
    for (path, content_type, file) in cases {
        let (status, headers, body) = fetch(&r, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(body, file, "{path} is the embedded file");
        let csp = &headers["content-security-policy"];
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    // The page loads exactly these, and nothing from elsewhere.
    for asset in [
        "src=\"/console/console.js\"",
        "href=\"/console/console.css\"",
        "href=\"/console/icon.svg\"",
    ] {
        assert!(INDEX.contains(asset), "{asset}");
    }
    for (name, text) in [
        ("index.html", INDEX),
        ("console.js", JS),
        ("console.css", CSS),
    ] {
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
            "{name} refers to another origin"
        );
    }
    // Nothing the policy would block: no inline script, handler or style attribute.
    assert_eq!(
        INDEX.matches("<script").count(),
        INDEX.matches("<script src=").count()
    );
    for inline in [" style=", " onclick=", " onload=", "javascript:"] {
        assert!(!INDEX.contains(inline), "{inline}");
    }
    assert!(!JS.contains("innerHTML") && !JS.contains("eval("));
}

#[tokio::test]
async fn history_has_the_documented_shape_and_counts_new_flows_per_second() {
    let r = start().await;
    let first = wait_for_history(&r, |h| h.samples.len() >= 2).await;
    // Without an open console the sampler reads only the balancer: no status, no database.
    assert!(r.fake.calls().is_empty(), "{:?}", r.fake.calls());
    let (_, _, body) = fetch(&r, "/api/history").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keys(&v), set(&["interval_seconds", "capacity", "samples"]));
    assert_eq!(v["interval_seconds"], 1.0);
    assert_eq!(v["capacity"], 300);
    let sample = &v["samples"][0];
    assert_eq!(keys(sample), set(&["time", "targets"]));
    assert_eq!(
        keys(&sample["targets"][0]),
        set(&["group", "id", "new_flows_per_second", "active_flows"])
    );
    assert_eq!(
        sample["targets"][0],
        json!({"group": "proxies-tg", "id": "127.10.1.11:3128",
               "new_flows_per_second": 0.0, "active_flows": 3})
    );
    let times: Vec<f64> = first.samples.iter().map(|s| s.time).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {times:?}"
    );
    let now = proxyfleet_state::report::now();
    assert!(
        (now - times[times.len() - 1]).abs() < 5.0,
        "{times:?} vs {now}"
    );

    r.fake.add_flows(40);
    let h = wait_for_history(&r, |h| {
        h.samples
            .last()
            .is_some_and(|s| s.targets[0].new_flows_per_second > 0.0)
    })
    .await;
    let last = h.samples.last().unwrap();
    let rate = last.targets[0].new_flows_per_second;
    // 40 flows over about a second (a slow tick spreads them over more).
    assert!((10.0..=60.0).contains(&rate), "{rate}");
    assert!(
        last.targets[1..]
            .iter()
            .all(|t| t.new_flows_per_second == 0.0),
        "the other targets' totals did not move: {last:?}"
    );
}

async fn wait_for_history(r: &Running, ok: impl Fn(&HistoryView) -> bool) -> HistoryView {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let resp = r.get("/api/history").await;
        assert_eq!(resp.status, 200);
        assert!(resp.content_type.starts_with("application/json"));
        let h: HistoryView = serde_json::from_slice(&resp.body).unwrap();
        if ok(&h) {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history never got there: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An open `GET /api/events`: reads events as (name, data).
struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    async fn open(r: &Running) -> Events {
        let mut stream = TcpStream::connect(r.admin.addr).await.unwrap();
        stream
            .write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_ascii_lowercase());
        }
        assert!(head[0].contains(" 200 "), "{head:?}");
        assert!(head.contains(&"content-type: text/event-stream".to_string()));
        Events { reader }
    }

    /// The next event, or `None` at the end of the stream. The body is chunked: chunk-size
    /// lines are skipped (event lines never look like bare hex numbers).
    async fn next(&mut self) -> Option<(String, String)> {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
                .await
                .expect("an event within the timeout")
                .unwrap();
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else if line.is_empty() && !data.is_empty() {
                return Some((name, data));
            } else if line == "0" {
                return None;
            }
        }
    }
}

#[tokio::test]
async fn events_send_history_then_ticks_and_end_when_the_server_stops() {
    let r = start().await;
    let mut events = Events::open(&r).await;
    let (name, data) = events.next().await.unwrap();
    assert_eq!(name, "history");
    let _: HistoryView = serde_json::from_str(&data).unwrap();
    let (name, data) = events.next().await.unwrap();
    assert_eq!(name, "tick");
    let first: TickView = serde_json::from_str(&data).unwrap();
    assert_eq!(first.sample, None, "the history event has it");
    assert_eq!(first.status.targets.len(), 3);
    assert_eq!(
        first.status.instances.len(),
        2,
        "Terminated ones are left out"
    );
    let ids: Vec<i64> = first.activity.iter().map(|a| a.id).collect();
    assert_eq!(ids, [3, 2, 1], "newest first");
    let tick: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(keys(&tick), set(&["status", "sample", "activity"]));

    // Then one per sample.
    let (name, data) = events.next().await.unwrap();
    assert_eq!(name, "tick");
    let next: TickView = serde_json::from_str(&data).unwrap();
    let sample = next.sample.expect("a sample with each later tick");
    assert_eq!(sample.targets.len(), 3);
    assert!(r.fake.calls().contains(&"activities None 50".to_string()));

    // `down`: the stream ends, so the graceful stop does not wait for the console.
    let resp = r.post_with_token("/api/down", None).await;
    assert_eq!(resp.status, 200);
    while let Some((name, _)) = events.next().await {
        assert_eq!(name, "tick");
    }
    tokio::time::timeout(TIMEOUT, r.admin.wait())
        .await
        .expect("the server stops with a console open");
}

#[tokio::test]
async fn event_streams_are_bounded_and_the_next_is_refused_at_once() {
    let r = start().await;
    let mut open = Vec::new();
    for _ in 0..MAX_STREAMS {
        open.push(Events::open(&r).await);
    }
    let asked = tokio::time::Instant::now();
    let resp = r.get("/api/events").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.error_message().contains("consoles are open"));
    let (status, headers) = fetch_head(&r, "/api/events").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "10");
    assert_eq!(headers["connection"], "close");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "refused at once, not queued: {:?}",
        asked.elapsed()
    );
    // A console that leaves makes room.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, headers) = fetch_head(&r, "/api/events").await;
        if status == 200 {
            assert_eq!(headers["content-type"], "text/event-stream");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no room made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status and headers of a GET whose body may never end.
async fn fetch_head(r: &Running, path: &str) -> (u16, BTreeMap<String, String>) {
    let mut stream = TcpStream::connect(r.admin.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = 0;
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            return (status, headers);
        }
        if status == 0 {
            status = line[9..12].parse().unwrap();
        } else if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
    }
}

#[tokio::test]
async fn the_token_check_answers_only_the_right_token() {
    let r = start().await;
    let resp = r.get("/api/token").await;
    assert_eq!(resp.status, 401);
    let resp = proxyfleet_admin::client::request(
        r.admin.addr,
        hyper::Method::GET,
        "/api/token",
        Some(&"f".repeat(64)),
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(resp.error_message(), "wrong bearer token");
    let resp = proxyfleet_admin::client::request(
        r.admin.addr,
        hyper::Method::GET,
        "/api/token",
        Some(&r.token),
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&resp.body).unwrap(),
        json!({"ok": true})
    );
    assert!(r.fake.calls().is_empty(), "a check calls nothing");
}
