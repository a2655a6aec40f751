//! `url_rewrite_program` (old name `redirect_program`): each request that
//! `url_rewrite_access` lets through is shown to a helper (squidGuard, a script) as
//! `URL %>a/%>A %un %>rm myip=%la myport=%lp` (`url_rewrite_extras`), which answers, as
//! Squid 5.7 reads it:
//!
//! - `OK rewrite-url=URL`, or an old-style bare `URL`: the request goes to URL instead (not
//!   judged by `http_access` again), and the log shows URL;
//! - `OK status=30x url=URL`, or old-style `30x:URL`: the client is redirected there
//!   (`TCP_REDIRECT/30x`);
//! - `ERR`, `OK` alone, or an empty line: unchanged;
//! - `BH`: asked again, twice at most, then unchanged, as Squid does (each time logged as
//!   an error).

use crate::access_log::LogEntry;
use crate::acl::{AccessRules, Facts};
use crate::helper::{HelperSpec, Helpers, Verdict};
use crate::log_format::{Context, LogFormat};

/// What the rewriter decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    Unchanged,
    Url(String),
    Redirect { status: u16, url: String },
}

/// `url_rewrite_*` as configured.
#[derive(Debug, Clone)]
pub struct UrlRewriteConfig {
    pub helper: HelperSpec,
    /// `url_rewrite_access`: no lines, every request.
    pub access: AccessRules,
    /// `url_rewrite_extras` (default Squid's).
    pub extras: LogFormat,
    /// `url_rewrite_host_header` (default on): a rewritten request's `Host` names its new
    /// URL; off keeps the client's (accelerators whose backends expect the public name).
    pub rewrite_host_header: bool,
}

/// Squid 5.7's default `url_rewrite_extras`.
pub const DEFAULT_EXTRAS: &str = "%>a/%>A %un %>rm myip=%la myport=%lp";

/// How many times a `BH` answer is asked again (Squid asks three times in all).
const BROKEN_RETRIES: usize = 2;

pub struct UrlRewriter {
    config: UrlRewriteConfig,
    helpers: Helpers,
}

impl UrlRewriter {
    /// Starts the helpers (inside a tokio runtime).
    pub fn start(config: UrlRewriteConfig) -> UrlRewriter {
        let helpers = Helpers::start(config.helper.clone());
        UrlRewriter { config, helpers }
    }

    /// Whether this request is shown to the helper.
    pub fn applies(&self, f: &Facts) -> bool {
        self.config.access.is_empty() || self.config.access.allows(f)
    }

    /// Asks the helper about `url` (the request as logged so far in `entry`).
    /// Whether a rewritten request's `Host` follows its new URL.
    pub fn rewrites_host_header(&self) -> bool {
        self.config.rewrite_host_header
    }

    pub async fn ask(&self, url: &str, entry: &LogEntry) -> Rewrite {
        let mut line = String::with_capacity(url.len() + 64);
        line.push_str(url);
        line.push(' ');
        let cx = Context {
            strip_query_terms: false,
            sequence: 0,
            entry,
        };
        self.config.extras.render(&cx, &mut line);
        line.retain(|c| c != '\n' && c != '\r');
        for attempt in 0..=BROKEN_RETRIES {
            let answer = self.helpers.ask(line.clone()).await;
            match answer.verdict {
                Verdict::Ok => {
                    if let Some(to) = answer.get("rewrite-url") {
                        return Rewrite::Url(to.to_string());
                    }
                    let status = answer.get("status").and_then(|s| s.parse().ok());
                    return match (status, answer.get("url")) {
                        (Some(status @ 300..=399), Some(to)) => Rewrite::Redirect {
                            status,
                            url: to.to_string(),
                        },
                        (None, Some(to)) => Rewrite::Redirect {
                            status: 302,
                            url: to.to_string(),
                        },
                        _ => Rewrite::Unchanged,
                    };
                }
                Verdict::Err => return Rewrite::Unchanged,
                Verdict::Legacy => return legacy(&answer.rest),
                Verdict::Broken => {
                    tracing::error!(url, attempt = attempt + 1, answer = %answer.rest, "url_rewrite helper answered BH (or failed)");
                }
            }
        }
        tracing::error!(
            url,
            "url_rewrite helper broken: the request goes on unchanged, as Squid does"
        );
        Rewrite::Unchanged
    }
}

/// Squid 2's answers: empty (unchanged), `NNN:URL` (redirect), or a URL (rewrite).
fn legacy(answer: &str) -> Rewrite {
    let word = answer.split_whitespace().next().unwrap_or("");
    if word.is_empty() {
        return Rewrite::Unchanged;
    }
    if let Some((code, url)) = word.split_once(':') {
        if let Ok(status @ 300..=399) = code.parse::<u16>() {
            return Rewrite::Redirect {
                status,
                url: url.to_string(),
            };
        }
    }
    Rewrite::Url(word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_style_answers() {
        assert_eq!(legacy(""), Rewrite::Unchanged);
        assert_eq!(
            legacy("301:http://moved.test/"),
            Rewrite::Redirect {
                status: 301,
                url: "http://moved.test/".into()
            }
        );
        assert_eq!(
            legacy("http://other.test/x 1.2.3.4/- - GET"),
            Rewrite::Url("http://other.test/x".into())
        );
    }
}
