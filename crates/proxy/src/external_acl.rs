//! `external_acl_type NAME [options] FORMAT... HELPER [args]` and `acl X external NAME
//! [args]`: ACLs a helper decides (LDAP or AD group checks, a script), with Squid's
//! protocol: one line per question, the format's values URL-encoded and `-` for empty
//! ones, the ACL's arguments after them; `OK` matches, `ERR` does not, and `BH` or a
//! broken helper does not either (logged). Answers are remembered for `ttl` (OK) or
//! `negative_ttl` (ERR).

use std::collections::HashMap;
use std::time::Duration;

use crate::access_log::LogEntry;
use crate::expiring::ExpiringMap;
use crate::helper::{escape_field as encode, HelperSpec, Helpers, Verdict};
use crate::log_format::{Context, LogFormat};

/// One `external_acl_type` line.
#[derive(Debug, Clone)]
pub struct ExternalAclType {
    pub name: String,
    pub helper: HelperSpec,
    pub format: Vec<FormatToken>,
    /// `ttl=` (default 1 hour): how long an OK is remembered.
    pub ttl: Duration,
    /// `negative_ttl=` (default: `ttl`): how long an ERR is remembered.
    pub negative_ttl: Duration,
    /// `%LOGIN` (or `%un`/`%ul`) is in the format: the client must log in first.
    pub needs_login: bool,
}

/// One element of the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatToken {
    /// Squid's older names: `%LOGIN`, `%SRC`, `%DST`, ...
    Legacy(Legacy),
    /// `%>{Header}` / `%{Header}`: a request field.
    RequestHeader(String),
    /// A `logformat` code (`%>a`, `%un`, ...), for Squid 4+ formats.
    Code(LogFormat),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    Login,
    Src,
    SrcPort,
    Dst,
    Proto,
    Port,
    Method,
    Path,
    Uri,
    MyAddr,
    MyPort,
    /// `%ACL`: the ACL's name.
    Acl,
    /// `%DATA`: the ACL's arguments (else they go at the end).
    Data,
    /// `%IDENT`, `%EXT_USER`, `%USER_CERT*`, `%EXT_TAG`, `%EXT_LOG`: always `-` here.
    Absent,
}

impl FormatToken {
    pub fn parse(token: &str) -> Result<FormatToken, String> {
        let legacy = match token {
            "%LOGIN" => Some(Legacy::Login),
            "%SRC" => Some(Legacy::Src),
            "%SRCPORT" => Some(Legacy::SrcPort),
            "%DST" => Some(Legacy::Dst),
            "%PROTO" => Some(Legacy::Proto),
            "%PORT" => Some(Legacy::Port),
            "%METHOD" => Some(Legacy::Method),
            "%PATH" => Some(Legacy::Path),
            "%URI" => Some(Legacy::Uri),
            "%MYADDR" => Some(Legacy::MyAddr),
            "%MYPORT" => Some(Legacy::MyPort),
            "%ACL" => Some(Legacy::Acl),
            "%DATA" => Some(Legacy::Data),
            "%IDENT" | "%EXT_USER" | "%EXT_TAG" | "%EXT_LOG" | "%USER_CERT" | "%USER_CA_CERT" => {
                Some(Legacy::Absent)
            }
            _ => None,
        };
        if let Some(l) = legacy {
            return Ok(FormatToken::Legacy(l));
        }
        for prefix in ["%>{", "%{"] {
            if let Some(rest) = token.strip_prefix(prefix) {
                let name = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("'{token}': a '{{' without its '}}'"))?;
                return Ok(FormatToken::RequestHeader(name.to_ascii_lowercase()));
            }
        }
        if token.starts_with("%<{")
            || token.starts_with("%USER_CERT_")
            || token.starts_with("%CA_CERT_")
        {
            return Err(format!(
                "'{token}': reply fields and certificates are not known when access is checked \
                 here"
            ));
        }
        LogFormat::parse(token).map(FormatToken::Code)
    }

    fn needs_login(&self) -> bool {
        match self {
            FormatToken::Legacy(Legacy::Login) => true,
            FormatToken::Code(f) => {
                f == &LogFormat::parse("%un").unwrap() || f == &LogFormat::parse("%ul").unwrap()
            }
            _ => false,
        }
    }
}

impl ExternalAclType {
    pub fn new(
        name: String,
        helper: HelperSpec,
        format: Vec<FormatToken>,
        ttl: Duration,
        negative_ttl: Duration,
    ) -> ExternalAclType {
        let needs_login = format.iter().any(FormatToken::needs_login);
        ExternalAclType {
            name,
            helper,
            format,
            ttl,
            negative_ttl,
            needs_login,
        }
    }
}

/// What a question is asked about: the request as logged so far, and the ACL.
pub struct Question<'a> {
    pub entry: &'a LogEntry,
    pub acl_name: &'a str,
    pub args: &'a [String],
}

/// The running helpers of every `external_acl_type`, with their remembered answers.
pub struct ExternalAcls {
    types: HashMap<String, (ExternalAclType, Helpers, ExpiringMap<Remembered>)>,
}

/// A remembered answer: whether it matched, and its `tag=`.
type Remembered = (bool, Option<String>);

/// Remembered answers per type at most.
const MAX_REMEMBERED: usize = 10_000;

impl ExternalAcls {
    /// Starts each type's helpers (inside a tokio runtime).
    pub fn start(types: &[ExternalAclType]) -> ExternalAcls {
        ExternalAcls {
            types: types
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        (
                            t.clone(),
                            Helpers::start(t.helper.clone()),
                            ExpiringMap::new(MAX_REMEMBERED),
                        ),
                    )
                })
                .collect(),
        }
    }

    /// Whether the ACL of type `class` matches, and the `tag=` its helper gave, if any
    /// (Squid: an OK or ERR answer may tag the request).
    pub async fn matches(&self, class: &str, q: &Question<'_>) -> Remembered {
        let Some((ty, helpers, remembered)) = self.types.get(class) else {
            return (false, None);
        };
        let line = question_line(ty, q);
        if let Some(known) = remembered.get(&line) {
            return known;
        }
        let answer = helpers.ask(line.clone()).await;
        let tag = answer.get("tag").map(String::from);
        match answer.verdict {
            Verdict::Ok => {
                remembered.insert(line, (true, tag.clone()), ty.ttl);
                (true, tag)
            }
            Verdict::Err => {
                remembered.insert(line, (false, tag.clone()), ty.negative_ttl);
                (false, tag)
            }
            Verdict::Broken | Verdict::Legacy => {
                tracing::error!(acl = q.acl_name, external_acl_type = class, answer = %answer.rest, "external ACL helper could not answer: the ACL does not match");
                (false, None)
            }
        }
    }
}

/// The line a helper is asked: each value URL-encoded, `-` when empty, the ACL's
/// arguments at `%DATA` or at the end.
pub fn question_line(ty: &ExternalAclType, q: &Question<'_>) -> String {
    let e = q.entry;
    let request = e.request.as_deref();
    let mut words: Vec<String> = Vec::with_capacity(ty.format.len() + q.args.len());
    let mut data_placed = false;
    for token in &ty.format {
        let value = match token {
            FormatToken::Legacy(l) => match l {
                Legacy::Login => e.user.clone().unwrap_or_default(),
                Legacy::Src => e.client.to_string(),
                Legacy::SrcPort => e.client_port.to_string(),
                Legacy::Dst => request.map(|r| r.host.clone()).unwrap_or_default(),
                Legacy::Proto => request
                    .map(|r| r.scheme.to_ascii_uppercase())
                    .unwrap_or_default(),
                Legacy::Port => e.server_port.to_string(),
                Legacy::Method => e.method.clone(),
                Legacy::Path => request.map(|r| r.path.clone()).unwrap_or_default(),
                Legacy::Uri => e.url.clone(),
                Legacy::MyAddr => e.local.map(|l| l.ip().to_string()).unwrap_or_default(),
                Legacy::MyPort => e.local.map(|l| l.port().to_string()).unwrap_or_default(),
                Legacy::Acl => q.acl_name.to_string(),
                Legacy::Data => {
                    data_placed = true;
                    words.extend(q.args.iter().map(|a| encode(a)));
                    continue;
                }
                Legacy::Absent => String::new(),
            },
            FormatToken::RequestHeader(name) => request
                .and_then(|r| r.head.as_ref())
                .map(|h| {
                    h.values(name)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            FormatToken::Code(format) => {
                let mut out = String::new();
                format.render(
                    &Context {
                        strip_query_terms: false,
                        sequence: 0,
                        entry: e,
                    },
                    &mut out,
                );
                if out == "-" {
                    String::new()
                } else {
                    out
                }
            }
        };
        words.push(if value.is_empty() {
            "-".into()
        } else {
            encode(&value)
        });
    }
    if !data_placed {
        words.extend(q.args.iter().map(|a| encode(a)));
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_tokens() {
        assert_eq!(
            FormatToken::parse("%LOGIN").unwrap(),
            FormatToken::Legacy(Legacy::Login)
        );
        assert_eq!(
            FormatToken::parse("%>{X-Team}").unwrap(),
            FormatToken::RequestHeader("x-team".into())
        );
        assert!(FormatToken::parse("%>a").is_ok());
        assert!(FormatToken::parse("%<{Server}").is_err());
        assert!(FormatToken::parse("%NOPE").is_err());
        assert_eq!(encode("a b%"), "a%20b%25");
    }
}
