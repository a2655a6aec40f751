//! Inputs the fuzz targets once failed on (`fuzz/regressions/<target>/`), fed to the parsers
//! with the same invariant the target broke, so plain `cargo test` keeps them fixed without
//! the fuzzer. A new crash: fix it, then copy its input into the target's folder.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use bytes::BytesMut;
use proxyfleet_proxy::config::ForwardedFor;
use proxyfleet_proxy::http::head::{request_framing, Head, MAX_HEADERS};
use proxyfleet_proxy::http::rewrite::{origin_request, Edits, Outgoing, RequestRewrite};
use proxyfleet_proxy::http::target::Target;
use proxyfleet_proxy::proxy_protocol;

/// Every file of `fuzz/regressions/<target>/`, with its name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                data,
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

/// A usable target has a host; the origin request the proxy writes frames the body as the
/// client's request did.
#[test]
fn head_regressions() {
    for (name, data) in inputs("head") {
        let mut buf = BytesMut::from(&data[..]);
        let Ok(Some(head)) = Head::parse_request(&mut buf, 64 * 1024) else {
            continue;
        };
        let target = Target::parse(head.method(), head.target());
        if let Ok(Target::Absolute { host, port, .. } | Target::Authority { host, port }) = &target
        {
            assert!(!host.is_empty() && *port != 0, "{name}: {target:?}");
        }
        let Ok(framing) = request_framing(&head) else {
            continue;
        };
        let Ok(Target::Absolute {
            scheme,
            host,
            port,
            path_and_query,
        }) = target
        else {
            continue;
        };
        let rw = RequestRewrite {
            via: Some("1.1 test (proxyfleet)".into()),
            forwarded_for: ForwardedFor::On,
        };
        let mut out = BytesMut::new();
        let client = IpAddr::V4(Ipv4Addr::new(127, 20, 0, 5));
        let host_header = Target::host_header(&host, port, &scheme);
        origin_request(
            &head,
            framing,
            &Outgoing {
                path_and_query: &path_and_query,
                host_header: &host_header,
                client,
            },
            &rw,
            &Edits::default(),
            &mut out,
        );
        // As an origin with this parser reads it (every field up to MAX_HEADERS).
        let sent = Head::parse_request_with(&mut out, usize::MAX, MAX_HEADERS)
            .unwrap_or_else(|e| panic!("{name}: origin request does not parse: {e:?}"))
            .unwrap_or_else(|| panic!("{name}: origin request incomplete"));
        assert_eq!(request_framing(&sent), Ok(framing), "{name}");
    }
}

/// A v1 header ends at its CRLF; a header that parses whole is waited for, not refused,
/// when only part of it has come.
#[test]
fn proxy_header_regressions() {
    let sender = IpAddr::V4(Ipv4Addr::new(127, 10, 1, 10));
    for (name, data) in inputs("proxy_header") {
        let Ok(Some((len, _))) = proxy_protocol::parse(&data, sender) else {
            continue;
        };
        if data.starts_with(b"PROXY ") {
            let line_end = data.windows(2).position(|w| w == b"\r\n").map(|p| p + 2);
            assert_eq!(
                Some(len),
                line_end,
                "{name}: v1 header not ended at its CRLF"
            );
        }
        for cut in 0..len {
            let prefix = proxy_protocol::parse(&data[..cut], sender);
            assert!(
                matches!(prefix, Ok(None)),
                "{name}: prefix of {cut} of {len}: {prefix:?}"
            );
        }
    }
}

/// A server name read from a ClientHello is never empty (a name of dots once was).
#[test]
fn tls_hello_regressions() {
    use proxyfleet_proxy::sni::{peek, Peek};
    for (name, data) in inputs("tls_hello") {
        if let Peek::Hello { sni: Some(sni) } = peek(&data) {
            assert!(!sni.is_empty(), "{name}: an empty server name");
        }
    }
}

/// A field width is bounded (an enormous one once took all memory to render).
#[test]
fn log_format_regressions() {
    use proxyfleet_proxy::log_format::LogFormat;
    for (name, data) in inputs("log_format") {
        let text = String::from_utf8_lossy(&data);
        if let Ok(format) = LogFormat::parse(&text) {
            let shown = format!("{format:?}");
            assert!(
                shown.len() < 1 << 20,
                "{name}: a format of {} bytes",
                shown.len()
            );
        }
    }
}
