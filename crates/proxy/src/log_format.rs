//! Squid's `logformat` language: `%[encoding][-][0][width][.precision][{arg}]code[{arg}]`
//! codes between literal text, rendered from one [`LogEntry`]. Used by `logformat` /
//! `access_log ... NAME` and by the values of `request_header_add` / `reply_header_add`.
//!
//! Hand-written: no crate speaks this format (it is Squid's own). Codes proxyfleet cannot
//! fill truthfully are refused when the configuration is read, never logged as a guess;
//! codes that Squid itself writes as `-` when the feature is not in use (ident, TLS user,
//! SNI without bumping) are written as `-`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use crate::access_log::LogEntry;

/// The widest field padding accepted (a typo such as `%00000999999tr` must not make
/// every log line megabytes long).
const MAX_WIDTH: usize = 1024;

/// Squid 5.7's built-in formats (`logformat` lines cannot redefine them).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "squid",
        "%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt",
    ),
    (
        "common",
        "%>a %[ui %[un [%tl] \"%rm %ru HTTP/%rv\" %>Hs %<st %Ss:%Sh",
    ),
    (
        "combined",
        "%>a %[ui %[un [%tl] \"%rm %ru HTTP/%rv\" %>Hs %<st \"%{Referer}>h\" \"%{User-Agent}>h\" %Ss:%Sh",
    ),
    ("referrer", "%ts.%03tu %>a %{Referer}>h %ru"),
    ("useragent", "%>a [%tl] \"%{User-Agent}>h\""),
];

/// A parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    code: Code,
    arg: Option<String>,
    encoding: Encoding,
    left_align: bool,
    zero_pad: bool,
    width: usize,
    precision: Option<usize>,
}

/// How a value is escaped (the character after `%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    None,
    /// `"`: in double quotes, `"` and `\` and control characters escaped.
    Quoted,
    /// `[`: Squid's MIME-blob escaping (control characters, `[`, `]`, `"` and `\`).
    Squid,
    /// `#`: URL-escaped.
    Url,
    /// `'`: raw, nothing escaped.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    ClientIp,
    ClientPort,
    LocalIp,
    LocalPort,
    ServerIp,
    ServerPort,
    TimeSeconds,
    TimeMillis,
    TimeLocal,
    TimeGmt,
    ResponseTime,
    User,
    /// Codes Squid writes as `-` unless a feature proxyfleet does not have is in use:
    /// ident (`ui`), TLS client certificates (`us`), external ACL users (`ue`).
    Absent,
    SquidStatus,
    Hierarchy,
    StatusSent,
    BytesSent,
    Method,
    Url,
    Path,
    Host,
    Scheme,
    Version,
    MimeType,
    RequestHeader,
    ReplyHeader,
    Sequence,
    Percent,
    Sni,
}

/// The codes, longest first so that a prefix match finds the longest one (Squid's rule).
const CODES: &[(&str, Code)] = &[
    ("ssl::>sni", Code::Sni),
    (">Hs", Code::StatusSent),
    (">ru", Code::Url),
    (">rm", Code::Method),
    (">rp", Code::Path),
    (">rd", Code::Host),
    (">rv", Code::Version),
    (">ha", Code::RequestHeader),
    ("<st", Code::BytesSent),
    ("<la", Code::LocalIp),
    (">a", Code::ClientIp),
    (">A", Code::ClientIp),
    (">p", Code::ClientPort),
    (">h", Code::RequestHeader),
    ("<a", Code::ServerIp),
    ("<A", Code::ServerIp),
    ("<p", Code::ServerPort),
    ("<h", Code::ReplyHeader),
    ("la", Code::LocalIp),
    ("lp", Code::LocalPort),
    ("ts", Code::TimeSeconds),
    ("tu", Code::TimeMillis),
    ("tl", Code::TimeLocal),
    ("tg", Code::TimeGmt),
    ("tr", Code::ResponseTime),
    ("un", Code::User),
    ("ul", Code::User),
    ("ui", Code::Absent),
    ("us", Code::Absent),
    ("ue", Code::Absent),
    ("Ss", Code::SquidStatus),
    ("Sh", Code::Hierarchy),
    ("Hs", Code::StatusSent),
    ("rm", Code::Method),
    ("ru", Code::Url),
    ("rp", Code::Path),
    ("rd", Code::Host),
    ("rP", Code::Scheme),
    ("rv", Code::Version),
    ("mt", Code::MimeType),
    ("sn", Code::Sequence),
    ("%", Code::Percent),
];

/// What a format can draw on besides the entry.
pub struct Context<'a> {
    pub strip_query_terms: bool,
    /// `%sn`: this line's number in its log.
    pub sequence: u64,
    pub entry: &'a LogEntry,
}

impl LogFormat {
    /// Parses a format; the error says which code, at which character.
    pub fn parse(text: &str) -> Result<LogFormat, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let start = text.len() - rest.len() + at;
            let (field, after) = parse_field(&rest[at + 1..])
                .map_err(|why| format!("character {}: {why}", text[..start].chars().count() + 1))?;
            rest = after;
            if field.code == Code::Percent {
                literal.push('%');
                continue;
            }
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Field(field));
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(LogFormat { parts })
    }

    /// A built-in format by name.
    pub fn built_in(name: &str) -> Option<LogFormat> {
        BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| LogFormat::parse(text).expect("built-in formats parse"))
    }

    /// Whether rendering reads the request's or the reply's header fields (so the entry
    /// must carry them).
    pub fn needs_heads(&self) -> (bool, bool) {
        let uses = |code| {
            self.parts
                .iter()
                .any(|p| matches!(p, Part::Field(f) if f.code == code))
        };
        (
            uses(Code::RequestHeader) || uses(Code::Version),
            uses(Code::ReplyHeader),
        )
    }

    pub fn render(&self, cx: &Context<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(field) => field.render(cx, out),
            }
        }
    }
}

/// One code after its `%`; returns it and the text after it.
fn parse_field(text: &str) -> Result<(Field, &str), String> {
    let mut rest = text;
    let encoding = match rest.chars().next() {
        Some('"') => Encoding::Quoted,
        Some('[') => Encoding::Squid,
        Some('#') => Encoding::Url,
        Some('\'') => Encoding::Raw,
        Some('/') => Encoding::None,
        _ => Encoding::None,
    };
    if matches!(rest.chars().next(), Some('"' | '[' | '#' | '\'' | '/')) {
        rest = &rest[1..];
    }
    let left_align = rest.starts_with('-');
    if left_align {
        rest = &rest[1..];
    }
    let zero_pad = rest.starts_with('0');
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let width: usize = if digits == 0 {
        0
    } else {
        rest[..digits]
            .parse()
            .ok()
            .filter(|w| *w <= MAX_WIDTH)
            .ok_or("a field width of more than 1024")?
    };
    rest = &rest[digits..];
    let mut precision = None;
    if let Some(after) = rest.strip_prefix('.') {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        precision = Some(
            after[..digits]
                .parse()
                .map_err(|_| "a '.' without a precision")?,
        );
        rest = &after[digits..];
    }
    let mut arg = None;
    if let Some(after) = rest.strip_prefix('{') {
        let end = after.find('}').ok_or("a '{' without its '}'")?;
        arg = Some(after[..end].to_string());
        rest = &after[end + 1..];
    }
    let (name, code) = CODES
        .iter()
        .find(|(name, _)| rest.starts_with(name))
        .ok_or_else(|| {
            let word: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            format!(
                "format code '%{word}' is not one proxyfleet can log (supported: {})",
                CODES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
            )
        })?;
    rest = &rest[name.len()..];
    if arg.is_none() {
        if let Some(after) = rest.strip_prefix('{') {
            let end = after.find('}').ok_or("a '{' without its '}'")?;
            arg = Some(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    Ok((
        Field {
            code: *code,
            arg,
            encoding,
            left_align,
            zero_pad,
            width,
            precision,
        },
        rest,
    ))
}

impl Field {
    fn render(&self, cx: &Context<'_>, out: &mut String) {
        let value = self.value(cx);
        let mut text: Cow<str> = match value {
            Some(v) if !v.is_empty() => v,
            _ => Cow::Borrowed("-"),
        };
        if let Some(p) = self.precision {
            if let Some((i, _)) = text.char_indices().nth(p) {
                text = Cow::Owned(text[..i].to_string());
            }
        }
        let text = encode(&text, self.encoding);
        let pad = self.width.saturating_sub(text.chars().count());
        if self.left_align {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            let filler = if self.zero_pad { '0' } else { ' ' };
            out.extend(std::iter::repeat_n(filler, pad));
            out.push_str(&text);
        }
    }

    fn value<'a>(&self, cx: &Context<'a>) -> Option<Cow<'a, str>> {
        let e = cx.entry;
        let since = e.start.duration_since(UNIX_EPOCH).unwrap_or_default();
        let owned = |s: String| Some(Cow::Owned(s));
        match self.code {
            Code::ClientIp => owned(e.client.to_string()),
            Code::ClientPort => (e.client_port != 0).then(|| e.client_port.to_string().into()),
            Code::LocalIp => e.local.map(|a| a.ip().to_string().into()),
            Code::LocalPort => e.local.map(|a| a.port().to_string().into()),
            Code::ServerIp => e.server.map(|ip| ip.to_string().into()),
            Code::ServerPort => e
                .server
                .and((e.server_port != 0).then_some(e.server_port))
                .map(|p| p.to_string().into()),
            Code::TimeSeconds => owned(since.as_secs().to_string()),
            Code::TimeMillis => owned(format!("{}", since.subsec_millis())),
            Code::TimeLocal => owned(time_text(since.as_secs(), self.arg.as_deref(), false)),
            Code::TimeGmt => owned(time_text(since.as_secs(), self.arg.as_deref(), true)),
            Code::ResponseTime => owned(e.elapsed.as_millis().to_string()),
            Code::User => e.user.as_deref().map(Cow::Borrowed),
            Code::Absent => None,
            Code::SquidStatus => Some(Cow::Borrowed(e.squid_status)),
            Code::Hierarchy => Some(Cow::Borrowed(e.hierarchy)),
            Code::StatusSent => owned(e.http_status.to_string()),
            Code::BytesSent => owned(e.bytes.to_string()),
            Code::Method => (!e.method.is_empty()).then_some(Cow::Borrowed(e.method.as_str())),
            Code::Url => Some(Cow::Borrowed(e.logged_url(cx.strip_query_terms))),
            Code::Path => e.request.as_ref().map(|r| r.path.as_str().into()),
            Code::Host => e.request.as_ref().map(|r| r.host.as_str().into()),
            Code::Scheme => e.request.as_ref().map(|r| r.scheme.as_str().into()),
            Code::Version => e
                .request
                .as_ref()
                .and_then(|r| r.head.as_ref())
                .map(|h| Cow::Borrowed(if h.minor_version == 0 { "1.0" } else { "1.1" })),
            Code::MimeType => e.mime.as_deref().map(Cow::Borrowed),
            Code::RequestHeader => {
                let head = e.request.as_ref().and_then(|r| r.head.as_ref())?;
                header_text(head, self.arg.as_deref())
            }
            Code::ReplyHeader => header_text(e.reply.as_ref()?, self.arg.as_deref()),
            Code::Sequence => owned(cx.sequence.to_string()),
            Code::Percent => Some(Cow::Borrowed("%")),
            Code::Sni => e.sni.as_deref().map(Cow::Borrowed),
        }
    }
}

/// `%>h{Name}`: the field's values joined with `, `; `{Name:separator}` not needed here.
/// Without a name, every field, one `Name: value\r\n` after another (Squid's whole head).
fn header_text<'a>(head: &'a crate::http::head::Head, name: Option<&str>) -> Option<Cow<'a, str>> {
    match name {
        Some(name) => {
            let mut joined = String::new();
            for value in head.values(name) {
                if !joined.is_empty() {
                    joined.push_str(", ");
                }
                joined.push_str(&String::from_utf8_lossy(value));
            }
            (!joined.is_empty()).then_some(Cow::Owned(joined))
        }
        None => {
            let mut all = String::new();
            for (n, v) in head.fields() {
                let _ = write!(
                    all,
                    "{}: {}\r\n",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                );
            }
            Some(Cow::Owned(all))
        }
    }
}

/// `%tl` / `%tg`: Squid's `dd/Mon/yyyy:HH:MM:SS +zzzz`, or the strftime format given.
fn time_text(secs: u64, format: Option<&str>, gmt: bool) -> String {
    let format = format.unwrap_or("%d/%b/%Y:%H:%M:%S %z");
    let t = secs as libc::time_t;
    // SAFETY: `tm` is written by localtime_r/gmtime_r before use; strftime writes at most
    // `buf.len()` bytes and returns how many.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if gmt {
            libc::gmtime_r(&t, &mut tm);
        } else {
            libc::localtime_r(&t, &mut tm);
        }
        let Ok(cformat) = std::ffi::CString::new(format) else {
            return "-".into();
        };
        let mut buf = [0u8; 128];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cformat.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn encode(text: &str, encoding: Encoding) -> Cow<'_, str> {
    match encoding {
        Encoding::None | Encoding::Raw => Cow::Borrowed(text),
        Encoding::Quoted => {
            let mut out = String::with_capacity(text.len() + 2);
            out.push('"');
            escape_into(text, &['"', '\\'], &mut out);
            out.push('"');
            Cow::Owned(out)
        }
        Encoding::Squid => {
            if !text.chars().any(|c| c.is_control() || "[]\"\\".contains(c)) {
                return Cow::Borrowed(text);
            }
            let mut out = String::with_capacity(text.len() + 8);
            escape_into(text, &['[', ']', '"', '\\'], &mut out);
            Cow::Owned(out)
        }
        Encoding::Url => {
            let mut out = String::with_capacity(text.len());
            for b in text.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
                    out.push(b as char);
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
            Cow::Owned(out)
        }
    }
}

fn escape_into(text: &str, special: &[char], out: &mut String) {
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::access_log::{LogEntry, LoggedRequest};
    use crate::http::head::Head;

    fn entry() -> LogEntry {
        let mut raw = bytes::BytesMut::from(
            &b"GET http://o.test/p?q=1 HTTP/1.1\r\nHost: o.test\r\nUser-Agent: curl/8 \"x\"\r\n\r\n"[..],
        );
        let head = Head::parse_request(&mut raw, 65536).unwrap().unwrap();
        LogEntry {
            start: UNIX_EPOCH + Duration::from_millis(1_795_596_876_083),
            elapsed: Duration::from_millis(2),
            client: "127.20.0.5".parse().unwrap(),
            squid_status: "TCP_MISS",
            http_status: 200,
            bytes: 794,
            method: "GET".into(),
            url: "http://o.test/p?q=1".into(),
            hierarchy: "HIER_DIRECT",
            server: Some("127.30.0.10".parse().unwrap()),
            mime: Some("text/html".into()),
            user: Some("alice".into()),
            client_port: 40000,
            local: Some("127.0.0.1:3128".parse().unwrap()),
            server_port: 8080,
            request: Some(Box::new(LoggedRequest {
                scheme: "http".into(),
                host: "o.test".into(),
                path: "/p?q=1".into(),
                head: Some(head),
            })),
            reply: None,
            sni: None,
        }
    }

    fn render(format: &str, e: &LogEntry) -> String {
        let mut out = String::new();
        let cx = Context {
            strip_query_terms: true,
            sequence: 7,
            entry: e,
        };
        LogFormat::parse(format).unwrap().render(&cx, &mut out);
        out
    }

    #[test]
    fn the_squid_format_renders_as_the_native_writer_does() {
        let e = entry();
        let (_, squid) = BUILT_IN[0];
        assert_eq!(format!("{}\n", render(squid, &e)), e.format(true));
        let mut bare = entry();
        bare.server = None;
        bare.user = None;
        bare.mime = None;
        bare.http_status = 0;
        bare.method = String::new();
        assert_eq!(format!("{}\n", render(squid, &bare)), bare.format(true));
    }

    #[test]
    fn codes_widths_and_encodings() {
        let e = entry();
        assert_eq!(
            render("%>a:%>p %la:%lp %<a:%<p %sn %%", &e),
            "127.20.0.5:40000 127.0.0.1:3128 127.30.0.10:8080 7 %"
        );
        assert_eq!(
            render("%rm %rP %rd %rp HTTP/%rv", &e),
            "GET http o.test /p?q=1 HTTP/1.1"
        );
        assert_eq!(
            render("[%-6un] [%6un] [%03>Hs] [%.3un]", &e),
            "[alice ] [ alice] [200] [ali]"
        );
        assert_eq!(render("%\"{User-Agent}>h", &e), "\"curl/8 \\\"x\\\"\"");
        assert_eq!(render("%[{User-Agent}>h", &e), "curl/8 \\\"x\\\"");
        assert_eq!(
            render("%#un %{Referer}>h %ui %ssl::>sni", &e),
            "alice - - -"
        );
        assert_eq!(render("%{%Y}tg %tg", &e), "2026 25/Nov/2026:08:54:36 +0000");
        assert_eq!(render("%ts.%03tu", &e), "1795596876.083");
    }

    #[test]
    fn built_in_formats_parse_and_unknown_codes_are_refused() {
        for (name, _) in BUILT_IN {
            assert!(LogFormat::built_in(name).is_some(), "{name}");
        }
        let e = LogFormat::parse("%ts %{x").unwrap_err();
        assert_eq!(e, "character 5: a '{' without its '}'");
        assert!(LogFormat::parse("%>st")
            .unwrap_err()
            .starts_with("character 1: format code '%>st'"));
    }
}
