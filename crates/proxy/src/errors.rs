//! Error responses the way Squid sends them: the status, an `X-Squid-Error: CODE ERRNO`
//! header that tools key on, and a short HTML page.

use std::io::Write;
use std::time::SystemTime;

use bytes::{BufMut, BytesMut};

use crate::http::head::FramingError;

/// The Squid error pages this proxy produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SquidError {
    AccessDenied,
    /// 407: credentials needed (`proxy_auth`), with `Proxy-Authenticate`.
    CacheAccessDenied,
    /// With the connect(2) errno (111 = refused, 110 = timed out).
    ConnectFail(i32),
    DnsFail,
    ReadTimeout,
    ReadError,
    InvalidReq,
    /// An `Expect` other than `100-continue`: Squid's ERR_INVALID_REQ page with 417.
    ExpectationFailed,
    InvalidUrl,
    InvalidResp,
    /// Request head larger than `request_header_max_size`.
    TooBig,
    UnsupportedRequest,
    /// A CONNECT on an accel port: Squid's ERR_UNSUP_REQ page with 405.
    MethodNotAllowed,
    ShuttingDown,
    /// The access log cannot be written and `logfile_error_policy refuse` says to serve
    /// nothing unlogged.
    LogUnwritable,
    /// `miss_access` denied the request (every request is a cache miss here).
    ForwardingDenied,
    /// `never_direct` forbids going direct and there is no parent to go through (a CONNECT;
    /// Squid 5.7 answers other requests `502 ERR_READ_ERROR` then).
    CannotForward,
}

impl SquidError {
    /// The answer to a request whose framing is refused, as Squid 5.7 answers it.
    pub fn for_framing(e: &FramingError) -> SquidError {
        match e {
            FramingError::UnsupportedEncoding => SquidError::UnsupportedRequest,
            FramingError::UnsupportedExpectation => SquidError::ExpectationFailed,
            FramingError::LengthAndEncoding
            | FramingError::BadLength
            | FramingError::EncodingInHttp10 => SquidError::InvalidReq,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            SquidError::AccessDenied | SquidError::ForwardingDenied => 403,
            SquidError::CacheAccessDenied => 407,
            SquidError::ConnectFail(_)
            | SquidError::DnsFail
            | SquidError::ShuttingDown
            | SquidError::LogUnwritable => 503,
            // What Squid 5.7 answers a CONNECT that may go nowhere (no parent, never_direct).
            SquidError::CannotForward => 500,
            SquidError::ReadTimeout => 504,
            SquidError::ReadError | SquidError::InvalidResp => 502,
            SquidError::InvalidReq | SquidError::InvalidUrl => 400,
            SquidError::ExpectationFailed => 417,
            SquidError::TooBig => 431,
            SquidError::UnsupportedRequest => 501,
            SquidError::MethodNotAllowed => 405,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            SquidError::AccessDenied => "ERR_ACCESS_DENIED",
            SquidError::CacheAccessDenied => "ERR_CACHE_ACCESS_DENIED",
            SquidError::ConnectFail(_) => "ERR_CONNECT_FAIL",
            SquidError::DnsFail => "ERR_DNS_FAIL",
            SquidError::ReadTimeout => "ERR_READ_TIMEOUT",
            SquidError::ReadError => "ERR_READ_ERROR",
            SquidError::InvalidReq | SquidError::ExpectationFailed => "ERR_INVALID_REQ",
            SquidError::InvalidUrl => "ERR_INVALID_URL",
            SquidError::InvalidResp => "ERR_INVALID_RESP",
            SquidError::TooBig => "ERR_TOO_BIG",
            SquidError::UnsupportedRequest | SquidError::MethodNotAllowed => "ERR_UNSUP_REQ",
            SquidError::ShuttingDown => "ERR_SHUTTING_DOWN",
            SquidError::LogUnwritable => "ERR_ACCESS_LOG_UNWRITABLE",
            SquidError::ForwardingDenied => "ERR_FORWARDING_DENIED",
            SquidError::CannotForward => "ERR_CANNOT_FORWARD",
        }
    }

    fn errno(self) -> i32 {
        match self {
            SquidError::ConnectFail(errno) => errno,
            _ => 0,
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            SquidError::AccessDenied => "Access control configuration prevents your request from being allowed at this time.",
            SquidError::CacheAccessDenied => "Sorry, you are not currently allowed to request this URL until you have authenticated yourself.",
            SquidError::ConnectFail(_) => "The system returned an error while connecting to the remote host.",
            SquidError::DnsFail => "Unable to determine IP address from host name.",
            SquidError::ReadTimeout => "The system timed out while waiting for the remote host.",
            SquidError::ReadError => "The system returned an error while reading from the remote host.",
            SquidError::InvalidReq | SquidError::ExpectationFailed => "Some aspect of the HTTP request is invalid.",
            SquidError::InvalidUrl => "Some aspect of the requested URL is incorrect.",
            SquidError::InvalidResp => "The HTTP response message received from the contacted server could not be understood or was otherwise malformed.",
            SquidError::TooBig => "The request or reply is too large.",
            SquidError::UnsupportedRequest | SquidError::MethodNotAllowed => "This proxy does not support the request method or URL scheme.",
            SquidError::ShuttingDown => "This proxy is in the process of shutting down.",
            SquidError::LogUnwritable => "This proxy cannot write its access log, and serves nothing it cannot log.",
            SquidError::ForwardingDenied => "This cache will not forward your request because it is trying to enforce a sibling relationship.",
            SquidError::CannotForward => "Unable to forward this request at this time.",
        }
    }

    /// The whole response, head and body, as `page` describes it.
    pub fn response(self, page: &Page) -> BytesMut {
        let Page {
            url,
            hostname,
            product,
            close,
            extra_headers,
            custom,
        } = *page;
        if let Some(Custom::Redirect { status, location }) = custom {
            let denied = format!("X-Squid-Error: {status} Access Denied\r\n");
            return redirect(status, location, product, close, &denied);
        }
        let (status, code) = match custom {
            Some(Custom::Page { status, code }) => (status, code),
            _ => (self.status(), self.code()),
        };
        let body = format!(
            "<!DOCTYPE html>\n<html><head><title>ERROR: The requested URL could not be retrieved</title></head>\n<body>\n<h1>ERROR</h1>\n<h2>The requested URL could not be retrieved</h2>\n<p>While trying to retrieve the URL: <a href=\"{url}\">{url}</a></p>\n<p><b>{code}</b>: {text}</p>\n<hr>\n<p>Generated {date} by {host} ({product})</p>\n</body></html>\n",
            url = html_escape(url),
            text = self.explanation(),
            date = httpdate::fmt_http_date(SystemTime::now()),
            host = html_escape(hostname),
        );
        let mut out = BytesMut::with_capacity(body.len() + 400);
        let _ = write!(
            (&mut out).writer(),
            "HTTP/1.1 {status} {reason}\r\nServer: {product}\r\nMime-Version: 1.0\r\nDate: {date}\r\nContent-Type: text/html;charset=utf-8\r\nContent-Length: {len}\r\nX-Squid-Error: {code} {errno}\r\nVary: Accept-Language\r\nContent-Language: en\r\n{extra_headers}Connection: {conn}\r\n\r\n",
            reason = reason_phrase(status),
            date = httpdate::fmt_http_date(SystemTime::now()),
            len = body.len(),
            errno = self.errno(),
            conn = if close { "close" } else { "keep-alive" },
        );
        out.put_slice(body.as_bytes());
        out
    }
}

/// What an error page says besides the error itself.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub url: &'a str,
    pub hostname: &'a str,
    /// `proxyfleet/VERSION`, or `proxyfleet` under `httpd_suppress_version_string on`.
    pub product: &'a str,
    /// Adds `Connection: close` (else `keep-alive`).
    pub close: bool,
    /// Whole header lines (each ending in CRLF), e.g. a 407's `Proxy-Authenticate`.
    pub extra_headers: &'a str,
    /// `deny_info`'s answer instead of the error's own.
    pub custom: Option<Custom<'a>>,
}

/// What `deny_info` answers with.
#[derive(Debug, Clone, Copy)]
pub enum Custom<'a> {
    /// The page under this code (`X-Squid-Error`), with this status.
    Page { status: u16, code: &'a str },
    /// A redirect (`Location`), as Squid sends it: no body.
    Redirect { status: u16, location: &'a str },
}

/// A redirect as Squid sends one (no body); `extra` is whole header lines.
pub fn redirect(status: u16, location: &str, product: &str, close: bool, extra: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(256);
    let _ = write!(
        (&mut out).writer(),
        "HTTP/1.1 {status} {reason}\r\nServer: {product}\r\nMime-Version: 1.0\r\nDate: {date}\r\nContent-Type: text/html;charset=utf-8\r\nContent-Length: 0\r\nLocation: {location}\r\n{extra}Connection: {conn}\r\n\r\n",
        reason = reason_phrase(status),
        date = httpdate::fmt_http_date(SystemTime::now()),
        location = location.replace(['\r', '\n'], ""),
        conn = if close { "close" } else { "keep-alive" },
    );
    out
}

pub fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_squid_headers_and_escaped_url() {
        let r = SquidError::ConnectFail(111).response(&Page {
            url: "http://a/<x>",
            hostname: "px",
            product: "proxyfleet",
            close: true,
            extra_headers: "X-Extra: 1\r\n",
            custom: None,
        });
        let text = String::from_utf8(r.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("\r\nX-Squid-Error: ERR_CONNECT_FAIL 111\r\n"));
        assert!(text.contains("\r\nX-Extra: 1\r\nConnection: close\r\n\r\n"));
        assert!(text.contains("\r\nServer: proxyfleet\r\n"));
        assert!(text.contains("by px (proxyfleet)</p>"));
        assert!(text.contains("http://a/&lt;x&gt;"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
    }
}
