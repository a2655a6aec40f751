//! The ClientHello reader behind `ssl_bump peek` (`sni::peek`): any bytes a client sends.

use proxyfleet_proxy::sni::{client_hello, peek, Peek, MAX_HELLO};

pub fn run(data: &[u8]) {
    let verdict = peek(data);
    match &verdict {
        Peek::Hello { sni } => {
            if let Some(name) = sni {
                assert!(!name.is_empty(), "an empty server name");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
                    "server name {name:?} is not a lowercase host name"
                );
            }
            // Bytes after a whole hello (the client's next records) change nothing.
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[22, 3, 3, 0, 1, 0]);
            assert_eq!(peek(&longer), verdict, "more bytes changed a whole hello");
            // Cut short, it is not whole yet (or, cut inside its records, still readable
            // as the same stream).
            let half = &data[..data.len() / 2];
            assert!(
                !matches!(peek(half), Peek::Hello { sni: ref other } if other != sni),
                "half of the hello names another server"
            );
            assert!(
                data.len() <= MAX_HELLO + 8 * (16384 + 2048),
                "a hello past the bound was read"
            );
        }
        Peek::NeedMore => {
            assert!(
                data.len() < MAX_HELLO + 64 * 1024,
                "waiting on {} bytes",
                data.len()
            );
        }
        Peek::NotTls(_) => {}
    }
    // A hello built around the input's first bytes as a name reads back as that name.
    let name: String = data
        .iter()
        .take(60)
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    if !name.is_empty() {
        let built = client_hello(
            Some(&name),
            usize::from(data.len() as u8),
            1 + data.len() % 300,
        );
        assert_eq!(peek(&built), Peek::Hello { sni: Some(name) });
    }
}
