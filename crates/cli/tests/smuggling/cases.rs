//! The cases of `proxy_smuggling.rs`: what each sends, what proxyfleet must come to, and
//! where Squid 5.7 stands on it (with the reason where proxyfleet deliberately differs).

use crate::harness::ClientSaw;

/// What a case must come to: the client's final responses, and how many complete requests
/// reached the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub statuses: Vec<u16>,
    pub origin: usize,
}

impl Want {
    /// Whether `outcome` (with what the client saw) is this one. `or_cut`: a reply the proxy
    /// found malformed only after its head had gone out (which depends on how the origin's
    /// bytes were segmented) may instead end as a cut-off response and a closed connection.
    pub fn accepts(&self, outcome: &Want, client: &ClientSaw, or_cut: bool) -> bool {
        *outcome == *self
            || (or_cut && outcome.statuses.is_empty() && outcome.origin == 0 && client.truncated)
    }
}

/// Where Squid stands on a case. Agreement is judged on the verdict (was the first request
/// forwarded or refused, did anything get smuggled), not on the exact status: Squid refuses
/// a bad Content-Length with 411 where RFC 9112 says 400, and closes silently on a bad
/// chunked body where proxyfleet can still answer 400.
#[derive(Debug, Clone, Copy)]
pub enum SquidIs {
    /// Squid's behaviour is the specification here: the verdicts must agree.
    Spec,
    /// The verdicts must agree; the exact answers differ, for this reason.
    Agrees(&'static str),
    /// proxyfleet deliberately differs, and why (not asserted).
    Differs(&'static str),
}

pub struct Case {
    pub name: String,
    /// With `@O` for the strict origin's authority and `@R` for the raw origin's.
    pub send: String,
    pub want: Want,
    pub squid: SquidIs,
    /// Methods of the requests in order (for responses without a body).
    pub methods: Vec<&'static str>,
    /// Requests the client sent on purpose (the origin may see no more).
    pub sent: usize,
    /// See [`Want::accepts`].
    pub or_cut: bool,
}

pub fn want(statuses: &[u16], origin: usize) -> Want {
    Want {
        statuses: statuses.to_vec(),
        origin,
    }
}

pub struct Cases(pub Vec<Case>);

impl Cases {
    /// The path prefix of the next case: `/c007`.
    pub fn p(&self) -> String {
        format!("/c{:03}", self.0.len())
    }

    pub fn add(&mut self, name: &str, send: String, want: Want, squid: SquidIs) {
        let method = send.split(' ').next().unwrap_or("GET");
        let methods = vec![if method == "HEAD" { "HEAD" } else { "GET" }, "GET"];
        let sent = send.matches(" HTTP/1.").count() - send.matches("/smuggled HTTP/1.").count();
        self.0.push(Case {
            name: name.to_string(),
            send,
            want,
            squid,
            methods,
            sent,
            or_cut: false,
        });
    }
}

pub const CUT: &str = "the head had gone out when the body failed: the client sees a cut-off \
     reply and a close (proxyfleet answers 502 when nothing had been sent yet)";
pub const AFTER_ERROR: &str = "Squid keeps the client connection after its 502 and serves the \
     pipelined request; proxyfleet closes after every error page";

/// A request hidden inside a body: an origin that reads it is desynchronised.
pub fn smuggled(p: &str) -> String {
    format!("GET {p}/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// The pipelined second request most cases end with.
pub fn second(p: &str) -> String {
    format!("GET http://@O{p}/2 HTTP/1.1\r\nHost: x\r\n\r\n")
}

pub fn chunk_of(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

pub const REQUEST_ENTITIES: &str = "Squid's `request_entities off` (its default) refuses a GET or \
     HEAD with a Content-Length body (411); proxyfleet forwards it framed, as the issue asks";

pub fn cases() -> Vec<Case> {
    use SquidIs::{Agrees, Differs, Spec};
    let mut c = Cases(Vec::new());
    let ok2 = want(&[200, 200], 2);
    let ok1 = want(&[200], 1);
    let refused = |status| want(&[status], 0);

    // --- Connection never removes framing fields or Host.
    for (name, connection) in [
        ("Connection: Content-Length", "Content-Length"),
        (
            "Connection: keep-alive, Content-Length",
            "keep-alive, Content-Length",
        ),
        ("Connection: content-length (case)", "content-length"),
        ("Connection: Host", "Host"),
    ] {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nConnection: close, Content-Length\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add("Connection: close, Content-Length", send, ok1.clone(), Spec);
    }
    for (name, connection, expect) in [
        (
            "Connection: Transfer-Encoding",
            "Transfer-Encoding",
            ok2.clone(),
        ),
        (
            "Connection: close, Transfer-Encoding",
            "close, Transfer-Encoding",
            ok1.clone(),
        ),
        (
            "Connection: Content-Length, Transfer-Encoding",
            "Content-Length, Transfer-Encoding",
            ok2.clone(),
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nTransfer-Encoding: chunked\r\n\r\n{}{}",
            chunk_of(&smuggled(&p)),
            second(&p)
        );
        c.add(name, send, expect, Spec);
    }
    {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nProxy-Connection: Content-Length\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add("Proxy-Connection: Content-Length", send, ok2.clone(), Spec);
    }

    // --- Chunked syntax: CRLF only, no white space after the size, no overflow.
    let bad_bodies: &[(&str, &str)] = &[
        ("bare LF after the chunk size", "2\nxx\r\n0\r\n\r\n"),
        ("bare LF ending a chunk extension", "2;a\nxx\r\n0\r\n\r\n"),
        ("bare CR in the chunk-size line", "2\rxx\r\n0\r\n\r\n"),
        ("bare LF after chunk data", "2\r\nxx\n0\r\n\r\n"),
        ("bare CR after chunk data", "2\r\nxx\r0\r\n\r\n"),
        ("no CRLF after chunk data", "2\r\nxxx\r\n0\r\n\r\n"),
        ("chunk shorter than its size", "3\r\nxx\r\n0\r\n\r\n"),
        ("last chunk 0 LF LF", "2\r\nxx\r\n0\n\n"),
        ("last chunk 0 CRLF LF", "2\r\nxx\r\n0\r\n\n"),
        ("last chunk 0 LF CRLF", "2\r\nxx\r\n0\n\r\n"),
        ("trailer ended by a bare LF", "2\r\nxx\r\n0\r\nX-T: 1\n\r\n"),
        (
            "trailer with a bare CR",
            "2\r\nxx\r\n0\r\nX-T: 1\rX\r\n\r\n",
        ),
        (
            "obs-fold in a trailer",
            "2\r\nxx\r\n0\r\nX-T: 1\r\n folded\r\n\r\n",
        ),
        ("trailer without a colon", "2\r\nxx\r\n0\r\nX-T\r\n\r\n"),
        ("space after the chunk size", "2 \r\nxx\r\n0\r\n\r\n"),
        ("tab after the chunk size", "2\t\r\nxx\r\n0\r\n\r\n"),
        (
            "space before a chunk extension",
            "2 ;a=b\r\nxx\r\n0\r\n\r\n",
        ),
        ("space after the last chunk's size", "2\r\nxx\r\n0 \r\n\r\n"),
        ("0x prefix on the chunk size", "0x2\r\nxx\r\n0\r\n\r\n"),
        ("negative chunk size", "-2\r\nxx\r\n0\r\n\r\n"),
        ("plus sign on the chunk size", "+2\r\nxx\r\n0\r\n\r\n"),
        ("empty chunk size", "\r\nxx\r\n0\r\n\r\n"),
        ("non-hex chunk size", "g\r\nxx\r\n0\r\n\r\n"),
        (
            "chunk size over 64 bits",
            "1ffffffffffffffff\r\nxx\r\n0\r\n\r\n",
        ),
        (
            "chunk size over int64",
            "8000000000000000\r\nxx\r\n0\r\n\r\n",
        ),
        (
            "control byte in a chunk extension",
            "2;a\x01b\r\nxx\r\n0\r\n\r\n",
        ),
    ];
    for (name, body) in bad_bodies {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{}",
            second(&p)
        );
        let squid = match *name {
            "space before a chunk extension" => Differs(
                "Squid accepts BWS before ';' (RFC 9112's chunk-ext grammar allows it); \
                 proxyfleet refuses any white space after the size, as the issue asks: a hop \
                 that refuses it (as Squid does before CRLF) reads the body differently, and \
                 no real client sends it",
            ),
            "last chunk 0 CRLF LF"
            | "trailer ended by a bare LF"
            | "trailer with a bare CR"
            | "obs-fold in a trailer"
            | "trailer without a colon" => Differs(
                "Squid 5.7 reads the trailer section leniently (bare LF, bare CR, folding, a \
                 line without a colon) and drops it; proxyfleet parses trailers as strictly \
                 as a head (RFC 9112 §7.1.2) and refuses the body",
            ),
            _ => Agrees(
                "Squid closes the connection without a response; proxyfleet answers 400 \
                 (nothing had been answered yet)",
            ),
        };
        c.add(name, send, refused(400), squid);
    }
    // Valid chunked bodies, re-chunked on the way.
    let good_bodies: &[(&str, &str)] = &[
        (
            "chunk extensions (dropped)",
            "2;name=value\r\nxx\r\n3;a;b=\"q s\"\r\nyyy\r\n0;last\r\n\r\n",
        ),
        (
            "trailer fields (dropped)",
            "2\r\nxx\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
        ),
        ("upper-case hex size", "A\r\n0123456789\r\n0\r\n\r\n"),
        ("leading zeros in sizes", "0002\r\nxx\r\n000\r\n\r\n"),
        (
            "many one-byte chunks",
            "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n1\r\nd\r\n0\r\n\r\n",
        ),
        ("empty chunked body", "0\r\n\r\n"),
        ("a request hidden in chunk data", "HIDDEN"),
    ];
    for (name, body) in good_bodies {
        let p = c.p();
        let body = body.replace("HIDDEN", &chunk_of(&smuggled(&p)));
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{}",
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }

    // --- Transfer-Encoding values: only a lone `chunked`.
    let codings: &[(&str, &str, u16)] = &[
        (
            "TE identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n",
            501,
        ),
        (
            "TE gzip, chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            501,
        ),
        (
            "TE chunked, gzip",
            "Transfer-Encoding: chunked, gzip\r\n",
            501,
        ),
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
            501,
        ),
        (
            "TE chunked, chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
            501,
        ),
        (
            "TE chunked twice (two fields)",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
        (
            "TE chunked then TE x",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
            501,
        ),
        ("TE xchunked", "Transfer-Encoding: xchunked\r\n", 501),
        ("TE chunked;q=1", "Transfer-Encoding: chunked;q=1\r\n", 501),
        (
            "TE \"chunked\" (quoted)",
            "Transfer-Encoding: \"chunked\"\r\n",
            501,
        ),
        ("TE empty", "Transfer-Encoding:\r\n", 501),
        (
            "TE , chunked (empty element)",
            "Transfer-Encoding: , chunked\r\n",
            501,
        ),
        (
            "TE with space before the colon",
            "Transfer-Encoding : chunked\r\n",
            400,
        ),
        (
            "TE with tab before the colon",
            "Transfer-Encoding\t: chunked\r\n",
            400,
        ),
        (
            "TE folded onto a second line",
            "Transfer-Encoding:\r\n chunked\r\n",
            400,
        ),
        (
            "TE with a vertical tab",
            "Transfer-Encoding: \x0bchunked\r\n",
            400,
        ),
    ];
    for (name, field, status) in codings {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{field}\r\n{}{}",
            chunk_of("hello"),
            second(&p)
        );
        let squid = match *name {
            "TE folded onto a second line" => Differs(
                "Squid unfolds obs-fold and reads `chunked`; RFC 9112 §5.2 lets a proxy refuse \
                 a folded field with 400, and a folded framing field is a smuggling vector",
            ),
            "TE with a vertical tab" => Differs(
                "Squid takes VT for white space; it is a control character, not OWS (RFC 9110 \
                 §5.5), so proxyfleet (httparse) refuses the field",
            ),
            _ => Spec,
        };
        c.add(name, send, refused(*status), squid);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello{}",
            second(&p)
        );
        c.add(
            "TE identity (with a length)",
            send,
            refused(501),
            Differs(
                "Squid 5.7 still drops a lone `identity` (RFC 2616's no-op coding, gone since \
                 RFC 7230) and frames by Content-Length; proxyfleet refuses every coding but a \
                 lone `chunked` with 501",
            ),
        );
    }
    for (name, field) in [
        ("TE Chunked (case)", "Transfer-Encoding: Chunked\r\n"),
        (
            "TE with no space after the colon",
            "Transfer-Encoding:chunked\r\n",
        ),
        (
            "TE with tabs around the value",
            "Transfer-Encoding:\tchunked\t\r\n",
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{field}\r\n{}{}",
            chunk_of(&smuggled(&p)),
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }
    {
        // Not a Transfer-Encoding at all: the chunked-looking bytes are the next request.
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n{}",
            second(&p)
        );
        c.add(
            "Transfer_Encoding (another field)",
            send,
            want(&[200, 400], 1),
            Spec,
        );
    }

    // --- Transfer-Encoding with Content-Length: the coding wins, the length is removed,
    // and the connection closes after the response (RFC 9112 §6.3), as Squid does.
    for (name, fields, body) in [
        (
            "CL.TE: length first",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\nG".to_string(),
        ),
        (
            "TE.CL: coding first",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "8\r\nSMUGGLED\r\n0\r\n\r\n".to_string(),
        ),
        (
            "TE with a bad length",
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
            "0\r\n\r\n".to_string(),
        ),
        (
            "TE with two lengths",
            "Transfer-Encoding: chunked\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
            "0\r\n\r\n".to_string(),
        ),
        (
            "TE hiding a request from CL",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            chunk_of("GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\n{body}{}",
            second(&p)
        );
        c.add(
            name,
            send,
            ok1.clone(),
            Agrees(
                "both let the coding win and remove the length; Squid then keeps the \
                 connection for the pipelined request, proxyfleet closes it as RFC 9112 §6.3 \
                 requires after such a request",
            ),
        );
    }

    // --- Content-Length values.
    for (name, fields, status) in [
        (
            "two different lengths",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            400,
        ),
        (
            "a list of different lengths",
            "Content-Length: 5, 6\r\n",
            400,
        ),
        ("length with a plus sign", "Content-Length: +5\r\n", 400),
        ("negative length", "Content-Length: -5\r\n", 400),
        ("space inside the length", "Content-Length: 5 5\r\n", 400),
        ("hex length", "Content-Length: 0x5\r\n", 400),
        ("length with letters", "Content-Length: 5a\r\n", 400),
        ("empty length", "Content-Length:\r\n", 400),
        (
            "length with a trailing comma",
            "Content-Length: 5,\r\n",
            400,
        ),
        (
            "length over int64",
            "Content-Length: 99999999999999999999\r\n",
            400,
        ),
        (
            "length with space before the colon",
            "Content-Length : 5\r\n",
            400,
        ),
        (
            "length folded onto a second line",
            "Content-Length: 5\r\n 5\r\n",
            400,
        ),
        (
            "length with a decimal point",
            "Content-Length: 5.0\r\n",
            400,
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\nhello{}",
            second(&p)
        );
        let squid = match name {
            "length with a trailing comma" => Differs(
                "Squid skips the empty list element and reads 5; RFC 9110 §8.6 allows only a \
                 list of identical numbers, so proxyfleet refuses",
            ),
            "length with space before the colon" => Spec,
            _ => Agrees("Squid answers 411 Length Required, proxyfleet 400 (RFC 9112 §6.3)"),
        };
        c.add(name, send, refused(status), squid);
    }
    for (name, fields) in [
        (
            "identical lengths merged (two fields)",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        (
            "identical lengths merged (a list)",
            "Content-Length: 5, 5\r\n",
        ),
        ("length with leading zeros", "Content-Length: 0005\r\n"),
        ("length with surrounding tabs", "Content-Length:\t5\t\r\n"),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\nhello{}",
            second(&p)
        );
        c.add(name, send, ok2.clone(), Spec);
    }

    // --- Bodies on any method are forwarded framed.
    for method in ["GET", "OPTIONS", "DELETE", "PUT", "PATCH"] {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "{method} http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        let squid = if method == "GET" {
            Differs(REQUEST_ENTITIES)
        } else {
            Spec
        };
        c.add(
            &format!("{method} with a length body"),
            send,
            ok2.clone(),
            squid,
        );
    }
    for method in ["GET", "HEAD"] {
        let p = c.p();
        let send = format!(
            "{method} http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}{}",
            chunk_of(&smuggled(&p)),
            second(&p)
        );
        c.add(
            &format!("{method} with a chunked body"),
            send,
            ok2.clone(),
            Spec,
        );
    }
    {
        let p = c.p();
        let body = smuggled(&p);
        let send = format!(
            "HEAD http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}{}",
            body.len(),
            second(&p)
        );
        c.add(
            "HEAD with a length body",
            send,
            ok2.clone(),
            Differs(REQUEST_ENTITIES),
        );
    }

    // --- Head syntax.
    for (name, fields) in [
        ("obs-fold in a field", "X-A: 1\r\n folded\r\n"),
        ("obs-fold with a tab", "X-A: 1\r\n\tfolded\r\n"),
        ("space before the colon", "X-A : 1\r\n"),
        ("a field line without a colon", "X-A\r\n"),
        ("an empty field name", ": 1\r\n"),
        ("a bracket in a field name", "X(A): 1\r\n"),
        ("a bare CR inside a value", "X-A: 1\r2\r\n"),
        ("a NUL inside a value", "X-A: 1\x002\r\n"),
        ("white space before the first field", " X-A: 1\r\n"),
    ] {
        let p = c.p();
        let send = format!(
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{fields}\r\n{}",
            second(&p)
        );
        let squid = match name {
            "obs-fold in a field" | "obs-fold with a tab" => Differs(
                "Squid's relaxed_header_parser unfolds obs-fold; RFC 9112 §5.2 lets a proxy \
                 refuse it with 400 and proxyfleet does (a folded framing field is a \
                 smuggling vector)",
            ),
            "space before the colon" => Differs(
                "Squid's relaxed parser drops or accepts such fields; RFC 9112 §5.1 requires \
                 400 from a server and removal from a proxy — proxyfleet refuses",
            ),
            "a bare CR inside a value" => Differs(
                "Squid accepts a bare CR inside a value; RFC 9112 §2.2 requires a recipient to \
                 treat it as invalid or replace it, and proxyfleet refuses",
            ),
            "white space before the first field" => Differs(
                "Squid ignores the white space; RFC 9112 §2.2 says to reject or skip that line, \
                 and proxyfleet rejects",
            ),
            _ => Spec,
        };
        c.add(name, send, refused(400), squid);
    }
    for (name, head) in [
        (
            "two spaces in the request line",
            "GET  http://@O/1 HTTP/1.1\r\n",
        ),
        ("lower-case version", "GET http://@O/1 http/1.1\r\n"),
        ("version 1.2", "GET http://@O/1 HTTP/1.2\r\n"),
        ("a space after the version", "GET http://@O/1 HTTP/1.1 \r\n"),
        ("no version (HTTP/0.9)", "GET http://@O/1\r\n"),
    ] {
        let p = c.p();
        let head = head
            .replace("/1 ", &format!("{p}/1 "))
            .replace("/1\r", &format!("{p}/1\r"));
        let send = format!("{head}Host: x\r\n\r\n{}", second(&p));
        let squid = match name {
            "two spaces in the request line" | "a space after the version" => Differs(
                "Squid's relaxed_header_parser accepts extra spaces in the request line; \
                 proxyfleet (httparse) refuses",
            ),
            "version 1.2" => Differs(
                "Squid processes HTTP/1.2 as 1.1, as RFC 9110 §2.5 asks; httparse refuses any \
                 version but 1.0 and 1.1 (a gap, harmless for framing)",
            ),
            "lower-case version" => Differs(
                "Squid accepts `http/1.1`; the version is case-sensitive (RFC 9112 §2.3), so \
                 proxyfleet refuses",
            ),
            "no version (HTTP/0.9)" => Differs("Squid treats it as HTTP/0.9; proxyfleet refuses"),
            _ => Spec,
        };
        c.add(name, send, refused(400), squid);
    }
    for (name, send_head) in [
        (
            "bare LF line ends in the head",
            "GET http://@O{p}/1 HTTP/1.1\nHost: x\nX-A: 1\n\n",
        ),
        (
            "mixed CRLF and LF in the head",
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
        ),
        (
            "obs-text in a value",
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nX-A: caf\u{e9}\r\n\r\n",
        ),
        (
            "a long field",
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nX-Long: LONG\r\n\r\n",
        ),
    ] {
        let p = c.p();
        let head = send_head
            .replace("{p}", &p)
            .replace("LONG", &"a".repeat(6000));
        let send = format!("{head}{}", second(&p));
        c.add(name, send, ok2.clone(), Spec);
    }

    // --- Expect.
    for (name, field, expect) in [
        (
            "Expect: 100-continue",
            "Expect: 100-continue\r\n",
            ok2.clone(),
        ),
        (
            "Expect: 100-Continue (case)",
            "Expect: 100-Continue\r\n",
            ok2.clone(),
        ),
        ("Expect: foo", "Expect: foo\r\n", refused(417)),
        (
            "Expect: 100-continue, foo",
            "Expect: 100-continue, foo\r\n",
            refused(417),
        ),
        ("Expect empty", "Expect:\r\n", refused(417)),
        (
            "Expect twice",
            "Expect: 100-continue\r\nExpect: 100-continue\r\n",
            refused(417),
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n{field}Content-Length: 5\r\n\r\nhello{}",
            second(&p)
        );
        c.add(name, send, expect, Spec);
    }

    // --- HTTP/1.0.
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello{}",
            second(&p)
        );
        c.add("HTTP/1.0 with a length body", send, ok1.clone(), Spec);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhelloGET http://@O{p}/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        );
        c.add(
            "HTTP/1.0 keep-alive with a body, pipelined",
            send,
            ok2.clone(),
            Spec,
        );
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
        );
        c.add("HTTP/1.0 with Expect (ignored)", send, ok1.clone(), Spec);
    }
    for (name, fields) in [
        ("HTTP/1.0 with chunked", "Transfer-Encoding: chunked\r\n"),
        (
            "HTTP/1.0 with chunked and a length",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
    ] {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.0\r\nConnection: keep-alive\r\n{fields}\r\n{}{}",
            chunk_of("hello"),
            second(&p)
        );
        c.add(
            name,
            send,
            refused(400),
            Differs(
                "RFC 9112 §6.1: a Transfer-Encoding in an HTTP/1.0 message is faulty framing; \
                 Squid decodes it as chunked",
            ),
        );
    }

    // --- Pipelining.
    {
        let p = c.p();
        let send = format!(
            "GET http://@O{p}/1 HTTP/1.1\r\nHost: x\r\n\r\n{}",
            second(&p)
        );
        c.add("two GETs pipelined", send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}POST http://@O{p}/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            chunk_of("abc")
        );
        c.add("chunked then length, pipelined", send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n{}",
            second(&p)
        );
        c.add("zero length, then pipelined", send, ok2.clone(), Spec);
    }
    {
        let p = c.p();
        let body = "x".repeat(100_000);
        let send = format!(
            "POST http://@O{p}/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{}",
            body.len(),
            second(&p)
        );
        c.add("one 100 KB chunk", send, ok2.clone(), Spec);
    }

    // --- Reply side: malformed responses from the raw origin, then a pipelined request to
    // the strict one. A reply the proxy cannot frame the way the client will is refused
    // (502) or cut off with the connection closed, never followed by anything.
    for (name, raw, expect, squid) in [
        ("reply: bare LF in chunk size", "bare-lf-chunk", want(&[502], 0), Agrees(CUT)),
        ("reply: last chunk 0 LF LF", "lf-last-chunk", want(&[502], 0), Agrees(CUT)),
        ("reply: bad chunk after data", "bad-chunk-later", want(&[502], 0), Agrees(CUT)),
        ("reply: CL and TE", "cl-and-te", want(&[502], 0), Differs("Squid lets TE win in replies too; proxyfleet refuses the ambiguous reply")),
        ("reply: two lengths", "two-lengths", want(&[502], 0), Agrees(AFTER_ERROR)),
        ("reply: identical lengths", "same-lengths", want(&[200, 200], 1), Spec),
        ("reply: Connection: Content-Length", "connection-cl", want(&[200, 200], 1), Differs("Squid removes the Content-Length that the reply's Connection names and sends the body unframed on a kept-alive connection: the client cannot tell where it ends (a reply-side desync)")),
        ("reply: Connection: close, Transfer-Encoding", "connection-te", want(&[200, 200], 1), Spec),
        ("reply: gzip, chunked", "gzip-chunked", want(&[502], 0), Agrees(AFTER_ERROR)),
        ("reply: HTTP/1.0 with chunked", "http10-chunked", want(&[502], 0), Differs("RFC 9112 §6.1: faulty framing; Squid decodes it")),
        ("reply: obs-fold", "obs-fold", want(&[502], 0), Differs("Squid unfolds; proxyfleet refuses")),
        ("reply: space before colon", "space-colon", want(&[502], 0), Differs("Squid's relaxed parser accepts; proxyfleet refuses")),
        ("reply: extensions and trailers", "ext-trailers", want(&[200, 200], 1), Spec),
        ("reply: bytes after the body", "extra-bytes", want(&[200, 200], 1), Spec),
        ("reply: 204 with a body", "204-with-body", want(&[204, 200], 1), Differs("Squid 5.7 passes the bytes an origin sends after a 204 to the client, where they read as a second response (response splitting); proxyfleet drops them with the origin connection")),
        ("reply: HEAD answered with a body", "head-with-body", want(&[200, 200], 1), Spec),
        ("reply: until close", "until-close", want(&[200], 0), Agrees("Squid re-chunks a close-delimited reply and keeps the client connection; proxyfleet ends it by closing, as the origin did")),
        ("reply: bad length", "bad-length", want(&[502], 0), Agrees(AFTER_ERROR)),
        ("reply: body shorter than its length", "short-body", want(&[502], 0), Agrees(CUT)),
    ] {
        let p = c.p();
        let method = if raw == "head-with-body" { "HEAD" } else { "GET" };
        let send = format!(
            "{method} http://@R{p}/raw/{raw} HTTP/1.1\r\nHost: x\r\n\r\n{}",
            second(&p)
        );
        let cut = matches!(raw, "bare-lf-chunk" | "lf-last-chunk" | "bad-chunk-later" | "short-body");
        c.add(name, send, expect, squid);
        c.0.last_mut().unwrap().or_cut = cut;
        // The raw origin is not the strict one: only the pipelined request counts there.
        c.0.last_mut().unwrap().sent = 1;
    }
    c.0
}
