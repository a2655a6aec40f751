//! Clients: raw TCP sockets bound to a chosen source address (for exact bytes, hostile
//! input and PROXY headers), and `curl` runs (a real HTTP client).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A TCP connection from `source` (any port) to `target`, or why not within `timeout` (a
/// firewall's drop is a timeout).
pub fn try_connect_from(
    source: &str,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let source: IpAddr = source.parse().expect("source address");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&target.into(), timeout)?;
    Ok(socket.into())
}

/// A TCP connection from `source` (any port) to `target`.
pub fn connect_from(source: &str, target: SocketAddr) -> TcpStream {
    let stream = try_connect_from(source, target, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Reads until the peer closes or `limit` passes; returns what arrived.
pub fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .ok();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break
            }
            Err(_) => break,
        }
    }
    out
}

/// A response head's Content-Length (0 without one).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Reads one HTTP response head and its Content-Length body (enough for keep-alive tests).
pub fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head; got {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = content_length(&head);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).expect("read response body");
        assert!(n > 0, "connection closed inside a response body");
        body.extend_from_slice(&buf[..n]);
    }
    (head, body)
}

/// One `GET url` (absolute form) through `proxy` from `source` on a new connection: the
/// status code, 0 without an answer.
pub fn status_of(source: &str, proxy: SocketAddr, url: &str) -> u16 {
    let reply = exchange_raw(
        source,
        proxy,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends `request` from `source` and returns everything until the proxy closes.
pub fn exchange_raw(source: &str, proxy: SocketAddr, request: &[u8]) -> String {
    let mut s = connect_from(source, proxy);
    s.write_all(request).expect("write request");
    String::from_utf8_lossy(&read_to_close(&mut s, Duration::from_secs(10))).into_owned()
}

/// The output of one curl run.
#[derive(Debug)]
pub struct Curl {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `curl -sS --max-time 20 ARGS...` and returns its output. Panics if curl is missing.
pub fn curl(args: &[&str]) -> Curl {
    curl_with_env(&[], args)
}

/// [`curl`] with extra environment variables (`http_proxy`, `https_proxy`: how
/// application servers are pointed at a proxy).
pub fn curl_with_env(env: &[(&str, &str)], args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .envs(env.iter().copied())
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl must be installed (the test command installs it)");
    Curl {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
