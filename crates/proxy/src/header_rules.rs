//! `request_header_access` / `reply_header_access`, `*_header_replace` and `*_header_add`,
//! with Squid's semantics:
//!
//! - a field is judged by the rules of its own name; a field without rules of its own by the
//!   `Other` rules if Squid does not know its name, and then by the `All` rules;
//! - the rules of one name are an access list (first match wins; none matching: the
//!   opposite of the last line); `deny` removes the field, or replaces its value when a
//!   `*_header_replace` line names it;
//! - `*_header_add` fields are appended after that, each when its ACLs match, with values
//!   that may use `logformat` codes.
//!
//! They apply to the fields the proxy copies and to the `Via` and `X-Forwarded-For` it
//! adds. `Host` and the framing fields are the proxy's own and never removed: dropping them
//! would leave the next hop unable to find the target or the body's end.

use std::collections::HashMap;

use crate::access_log::LogEntry;
use crate::acl::{AccessRules, AclList, Facts};
use crate::http::rewrite::FieldAction;
use crate::log_format::{Context, LogFormat};

/// One message direction's rules (requests or replies).
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    /// By lowercase field name.
    pub named: HashMap<String, AccessRules>,
    /// `Other`: fields whose names Squid does not know.
    pub other: Option<AccessRules>,
    /// `All`: fields no other rules name.
    pub all: Option<AccessRules>,
    /// `*_header_replace`, by lowercase name (`all` and `other` included).
    pub replace: HashMap<String, String>,
    pub add: Vec<FieldAdd>,
}

/// One `*_header_add NAME "value" [acl...]` line.
#[derive(Debug, Clone)]
pub struct FieldAdd {
    pub name: String,
    pub value: LogFormat,
    pub acls: AclList,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.other.is_none() && self.all.is_none() && self.add.is_empty()
    }

    /// What happens to a field named `name`.
    pub fn action(&self, name: &[u8], f: &Facts) -> FieldAction<'_> {
        let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
        let (rules, key) = if let Some(rules) = self.named.get(&lower) {
            (rules, lower.as_str())
        } else if let Some(rules) = self.other.as_ref().filter(|_| !is_known(&lower)) {
            (rules, "other")
        } else if let Some(rules) = &self.all {
            (rules, "all")
        } else {
            return FieldAction::Keep;
        };
        if rules.allows(f) {
            return FieldAction::Keep;
        }
        match self.replace.get(key) {
            Some(value) => FieldAction::Replace(value),
            None => FieldAction::Drop,
        }
    }

    /// The fields `*_header_add` lines add to this message.
    pub fn additions(&self, f: &Facts, entry: &LogEntry) -> Vec<(String, String)> {
        self.add
            .iter()
            .filter(|a| a.acls.matches(f))
            .map(|a| {
                let mut value = String::new();
                let cx = Context {
                    strip_query_terms: false,
                    sequence: 0,
                    entry,
                };
                a.value.render(&cx, &mut value);
                // A value is one line whatever a code expanded to.
                value.retain(|c| c != '\r' && c != '\n');
                (a.name.clone(), value)
            })
            .collect()
    }
}

/// Whether Squid knows a field by name (its registry, `HttpHeader.cc`): the `Other` rules
/// are for the rest.
fn is_known(lower: &str) -> bool {
    KNOWN.binary_search(&lower).is_ok()
}

/// Squid 5's registered field names, lowercase and sorted.
const KNOWN: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authentication-info",
    "authorization",
    "cache-control",
    "cdn-loop",
    "connection",
    "content-base",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "cookie",
    "cookie2",
    "date",
    "etag",
    "expect",
    "expires",
    "forwarded",
    "from",
    "front-end-https",
    "ftp-arguments",
    "ftp-command",
    "ftp-pre",
    "ftp-reason",
    "ftp-status",
    "host",
    "http2-settings",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "key",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "mime-version",
    "negotiate",
    "origin",
    "pragma",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "proxy-connection",
    "proxy-support",
    "public",
    "range",
    "referer",
    "request-range",
    "retry-after",
    "server",
    "set-cookie",
    "set-cookie2",
    "surrogate-capability",
    "surrogate-control",
    "te",
    "title",
    "trailer",
    "transfer-encoding",
    "translate",
    "unless-modified-since",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "x-accelerator-vary",
    "x-cache",
    "x-cache-lookup",
    "x-forwarded-for",
    "x-next-services",
    "x-request-uri",
    "x-squid-error",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_sorted_for_binary_search() {
        assert!(KNOWN.windows(2).all(|w| w[0] < w[1]));
        assert!(is_known("user-agent") && !is_known("x-custom"));
    }
}
