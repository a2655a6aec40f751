//! `deny_info ERR_PAGE|URL|TCP_RESET acl...`: what a request denied by a rule whose last ACL
//! is one of these gets instead of the usual `ERR_ACCESS_DENIED` page.

use std::sync::Arc;

use super::parse::{Directive, Parser};
use super::ConfigError;

/// One `deny_info` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyInfo {
    /// `ERR_NAME` (or `NNN:ERR_NAME`): the access-denied page under that name, with that
    /// status (default 403).
    Page { status: u16, name: String },
    /// `http://...` (or `3xx:http://...`): a redirect there (default 302). `%s` in it is
    /// replaced by the request's URL, `%H` by its host.
    Redirect { status: u16, url: String },
    /// `TCP_RESET`: the connection is reset, nothing is sent.
    Reset,
}

impl DenyInfo {
    /// The `Location` for a redirect: Squid's `%s` (the URL, percent-encoded as Squid 5.7
    /// encodes it) and `%H` (the host) codes filled in.
    pub fn location(url: &str, request_url: &str, host: &str) -> String {
        url.replace("%s", &percent_encode(request_url))
            .replace("%H", host)
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Parser {
    pub(super) fn deny_info(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let what = d.arg(0, "error page name, URL or TCP_RESET")?;
        d.arg(1, "acl name")?;
        let (status, rest) = match what.text.split_once(':') {
            Some((code, rest)) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
                (code.parse::<u16>().ok(), rest)
            }
            _ => (None, what.text.as_str()),
        };
        let info = if rest == "TCP_RESET" {
            DenyInfo::Reset
        } else if rest.contains("://") {
            let status = status.unwrap_or(302);
            if !(300..400).contains(&status) {
                return Err(d.error(
                    what,
                    format!("a redirect's status must be 3xx, not {status}"),
                ));
            }
            DenyInfo::Redirect {
                status,
                url: rest.to_string(),
            }
        } else if rest.starts_with("ERR_") {
            let status = status.unwrap_or(403);
            if !(200..600).contains(&status) || (300..400).contains(&status) {
                return Err(d.error(
                    what,
                    format!("{status} is not a status for an error page (4xx or 5xx)"),
                ));
            }
            DenyInfo::Page {
                status,
                name: rest.to_string(),
            }
        } else {
            return Err(d.error(
                what,
                format!(
                    "'{}' is not an error page name (ERR_...), a URL or TCP_RESET (page files \
                     of one's own are not supported: pages are proxyfleet's own)",
                    what.text
                ),
            ));
        };
        let info = Arc::new(info);
        let refs = self.acl_refs(d, &d.args[1..])?;
        for r in refs {
            // Squid: the first deny_info naming an ACL wins.
            self.deny_info
                .entry(r.name)
                .or_insert_with(|| Arc::clone(&info));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_errors, parse_ok};
    use super::DenyInfo;

    #[test]
    fn forms() {
        let c = parse_ok(
            "acl a src 10.0.0.0/8\nacl b src 10.1.0.0/16\nacl c src 10.2.0.0/16\n\
             deny_info ERR_BLOCKED a\n\
             deny_info 307:http://block.test/?u=%s b\n\
             deny_info TCP_RESET c\n\
             deny_info ERR_LATER a\n",
        );
        assert_eq!(
            *c.deny_info["a"],
            DenyInfo::Page {
                status: 403,
                name: "ERR_BLOCKED".into()
            }
        );
        assert_eq!(
            *c.deny_info["b"],
            DenyInfo::Redirect {
                status: 307,
                url: "http://block.test/?u=%s".into()
            }
        );
        assert_eq!(*c.deny_info["c"], DenyInfo::Reset);
        assert_eq!(
            DenyInfo::location("http://block.test/?u=%s&h=%H", "http://x.test/p", "x.test"),
            "http://block.test/?u=http%3A%2F%2Fx.test%2Fp&h=x.test"
        );
    }

    #[test]
    fn errors() {
        assert_errors(&[
            ("deny_info ERR_X", "1:16: deny_info: missing acl name"),
            (
                "deny_info /etc/squid/page.html all",
                "1:11: deny_info: '/etc/squid/page.html' is not an error page name (ERR_...), \
                 a URL or TCP_RESET (page files of one's own are not supported: pages are \
                 proxyfleet's own)",
            ),
            (
                "deny_info 200:http://x.test/ all",
                "1:11: deny_info: a redirect's status must be 3xx, not 200",
            ),
            (
                "deny_info ERR_X nosuch",
                "1:17: deny_info: unknown acl 'nosuch' (acls must be defined before they are \
                 used)",
            ),
        ]);
    }
}
