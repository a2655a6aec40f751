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

#[path = "smuggling/cases.rs"]
mod cases;
mod common;
#[path = "smuggling/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cases::{cases, Case, SquidIs, Want};
use common::{base_config, start};
use harness::{client_exchange, ClientSaw, RawOrigin, Seen, Squid, StrictOrigin};

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
        if !case.want.accepts(&got.outcome(), &got.client, case.or_cut) {
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
