//! `logformat` text (`LogFormat::parse`), and rendering what parses.

use std::time::{Duration, UNIX_EPOCH};

use proxyfleet_proxy::access_log::LogEntry;
use proxyfleet_proxy::log_format::{Context, LogFormat};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(format) = LogFormat::parse(text) else {
        return;
    };
    let entry = LogEntry {
        start: UNIX_EPOCH + Duration::from_millis(1_795_596_876_083),
        elapsed: Duration::from_millis(2),
        client: "127.20.0.5".parse().unwrap(),
        squid_status: "TCP_MISS",
        http_status: 200,
        bytes: 794,
        method: "GET".into(),
        url: "http://o.test/p?q=1".into(),
        hierarchy: "HIER_DIRECT",
        server: None,
        mime: Some("text/html".into()),
        user: Some("a\nb".into()),
        client_port: 1,
        local: None,
        server_port: 0,
        request: None,
        reply: None,
        sni: None,
    };
    let mut out = String::new();
    format.render(
        &Context {
            strip_query_terms: true,
            sequence: 1,
            entry: &entry,
        },
        &mut out,
    );
    // A line is one line: no value here has a newline but the user name (escaped except
    // under the plain and raw encodings) and a strftime format's own `%n`.
    let may_break = ["un", "ul", "tl", "tg"].iter().any(|c| text.contains(c));
    if !text.contains('\n') && !may_break {
        assert!(!out.contains('\n'), "a newline from {text:?}: {out:?}");
    }
}
