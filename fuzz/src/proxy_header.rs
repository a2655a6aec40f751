//! The PROXY protocol header reader at buffer level (`read_header` calls it after each read
//! from the socket).

use std::net::{IpAddr, Ipv4Addr};

use proxyfleet_proxy::proxy_protocol::{parse, ProxyHeaderError};

const SENDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 10, 1, 10));
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

pub fn run(data: &[u8]) {
    let result = parse(data, SENDER);
    let Ok(Some((len, client))) = result else {
        if let Err(ProxyHeaderError::Missing) = result {
            // Neither signature starts the input: every extension of it is refused too.
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"PROXY \r\n");
            assert!(matches!(
                parse(&longer, SENDER),
                Err(ProxyHeaderError::Missing)
            ));
        }
        return;
    };
    assert!(
        len > 0 && len <= data.len(),
        "header of {len} of {} bytes",
        data.len()
    );
    // Where the header ends, by the spec and independently of the parser: v1 at its CRLF
    // (at most 107 bytes), v2 after the 16-byte fixed part and the length it gives.
    if data.starts_with(V2_SIGNATURE) {
        let body = u16::from_be_bytes([data[14], data[15]]);
        assert_eq!(len, 16 + usize::from(body), "v2 header length");
    } else {
        assert!(data.starts_with(b"PROXY "));
        assert!(len <= 107, "v1 header of {len} bytes");
        let line_end = data.windows(2).position(|w| w == b"\r\n").map(|p| p + 2);
        assert_eq!(Some(len), line_end, "v1 header does not end at its CRLF");
    }
    assert!(
        !client.to_canonical().is_ipv4() || client.is_ipv4(),
        "IPv4-mapped client {client} was not normalized"
    );
    // The header alone, and the header followed by anything, read the same.
    assert_eq!(parse(&data[..len], SENDER).ok(), Some(Some((len, client))));
    let mut more = data[..len].to_vec();
    more.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\nPROXY GET / HTTP/1.1\r\n");
    assert_eq!(parse(&more, SENDER).ok(), Some(Some((len, client))));
    // A header split across reads: every shorter prefix asks for more bytes rather than
    // refusing the connection.
    for cut in 0..len {
        let prefix = parse(&data[..cut], SENDER);
        assert!(
            matches!(prefix, Ok(None)),
            "prefix of {cut} of a {len}-byte header: {prefix:?}"
        );
    }
}
