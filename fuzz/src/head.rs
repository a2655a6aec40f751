//! The request head parser, and what the proxy does with a head it accepted.

use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use proxyfleet_proxy::config::ForwardedFor;
use proxyfleet_proxy::http::head::{request_framing, Head, HeadError, MAX_HEADERS};
use proxyfleet_proxy::http::rewrite::{origin_request, Edits, Outgoing, RequestRewrite};
use proxyfleet_proxy::http::target::Target;

/// The proxy's default `request_header_max_size`.
const MAX: usize = 64 * 1024;

fn parse(bytes: &[u8], max: usize) -> (Result<Option<Head>, HeadError>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let result = Head::parse_request(&mut buf, max);
    (result, buf)
}

pub fn run(data: &[u8]) {
    let (result, rest) = parse(data, MAX);
    let head = match result {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert!(data.len() <= MAX, "a partial head past the limit must fail");
            assert_eq!(
                &rest[..],
                data,
                "a partial head must leave the buffer as it was"
            );
            return;
        }
        Err(HeadError::TooLarge) => return,
        Err(HeadError::Invalid(_)) => return,
    };
    let len = head.wire_len();
    assert!(len <= data.len() && len <= MAX, "head of {len} bytes");
    assert_eq!(&rest[..], &data[len..], "what follows the head must stay");
    assert!(
        data[..len].ends_with(b"\n"),
        "a head ends with its empty line"
    );

    assert!(!head.method().is_empty(), "method not ASCII");
    assert!(!head.target().is_empty(), "target not ASCII");
    assert!(head.minor_version <= 1);
    let fields: Vec<(&[u8], &[u8])> = head.fields().collect();
    assert!(fields.len() <= MAX_HEADERS);
    for (name, value) in &fields {
        assert!(!name.is_empty(), "empty field name");
        assert!(
            !name
                .iter()
                .chain(value.iter())
                .any(|b| *b == b'\r' || *b == b'\n'),
            "line break inside a field: {name:?}: {value:?}"
        );
    }

    // The head alone is the same head: nothing after it changed how it was read.
    let (again, after) = parse(&data[..len], MAX);
    let again = again.expect("the head alone parses").expect("complete");
    assert!(after.is_empty());
    assert_eq!(again.method(), head.method());
    assert_eq!(again.target(), head.target());
    assert_eq!(again.minor_version, head.minor_version);
    assert!(
        again.fields().eq(head.fields()),
        "fields differ when re-read"
    );

    // Any shorter prefix waits for more bytes: a head split across reads reads the same.
    for cut in [len - 1, len / 2, len.saturating_sub(2)] {
        let (prefix, _) = parse(&data[..cut], MAX);
        assert!(
            matches!(prefix, Ok(None)),
            "prefix of {cut} of a {len}-byte head: {prefix:?}"
        );
    }
    // The limit is exact.
    assert!(matches!(parse(data, len).0, Ok(Some(_))));
    assert_eq!(parse(data, len - 1).0.err(), Some(HeadError::TooLarge));

    let framing = request_framing(&head);
    let target = Target::parse(head.method(), head.target());
    if let Ok(Target::Absolute {
        scheme,
        host,
        port,
        path_and_query,
    }) = &target
    {
        assert!(!host.is_empty() && *port != 0);
        assert_eq!(scheme, &scheme.to_ascii_lowercase());
        assert!(path_and_query.starts_with('/'));
        let host_header = Target::host_header(host, *port, scheme);
        let Ok(framing) = framing else { return };
        // What the origin reads must frame the body exactly as the proxy judged it:
        // otherwise the bytes after it are a second request nobody checked (smuggling).
        for (via, forwarded_for) in [
            (Some("1.1 fuzz (proxyfleet)".to_string()), ForwardedFor::On),
            (None, ForwardedFor::Transparent),
        ] {
            let rw = RequestRewrite { via, forwarded_for };
            let mut out = BytesMut::new();
            let client = IpAddr::V4(Ipv4Addr::new(127, 20, 0, 5));
            origin_request(
                &head,
                framing,
                &Outgoing {
                    path_and_query: path_and_query,
                    host_header: &host_header,
                    client,
                },
                &rw,
                &Edits::default(),
                &mut out,
            );
            let sent = out.clone();
            // As an origin with this parser reads it: every field up to MAX_HEADERS (a
            // client's request has fewer, to leave room for the fields the proxy adds).
            let mut buf = out.clone();
            let parsed = Head::parse_request_with(&mut buf, usize::MAX, MAX_HEADERS);
            let left = buf;
            let parsed = match parsed {
                Ok(Some(parsed)) => parsed,
                other => panic!("the origin request does not parse: {other:?}\n{sent:?}"),
            };
            assert!(left.is_empty(), "bytes after the origin request head");
            assert_eq!(parsed.method(), head.method());
            assert_eq!(
                request_framing(&parsed),
                Ok(framing),
                "the origin frames the body differently\n{sent:?}"
            );
        }
    }
}
