//! `Proxy-Authorization: Basic` checked the way Squid checks it: the user name and password
//! go to the `auth_param basic program` helper as `USER PASSWORD` (each percent-encoded, as
//! Squid sends them), `OK` means the client is that user. Accepted credentials are
//! remembered for `credentialsttl`; rejected ones are asked again each time, as Squid does.
//! A helper that is broken, crashes or does not answer never lets a request through.

use base64::Engine as _;

use crate::config::BasicAuth;
use crate::expiring::ExpiringMap;
use crate::helper::{Helpers, Verdict};
use crate::http::head::Head;

/// Accepted credentials remembered at most (a client trying endless passwords costs bounded
/// memory: only accepted ones are kept).
const MAX_REMEMBERED: usize = 10_000;

/// The Basic scheme with its running helpers.
pub struct BasicScheme {
    config: BasicAuth,
    helpers: Helpers,
    /// `user:password` -> the user name as logged, for `credentialsttl`.
    accepted: ExpiringMap<String>,
    /// The `Proxy-Authenticate` header line of a 407.
    challenge: String,
}

/// The configured schemes (`auth_param basic` and/or `digest`) with their helpers.
pub struct Schemes {
    pub basic: Option<BasicScheme>,
    pub digest: Option<crate::digest::DigestScheme>,
}

impl Schemes {
    /// Checks the credentials by the scheme the client used; one not configured fails.
    pub async fn check(&self, head: &Head) -> Outcome {
        let scheme = head
            .value("proxy-authorization")
            .and_then(|v| v.split(|b| *b == b' ').next())
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        match (scheme.as_deref(), &self.basic, &self.digest) {
            (Some("digest"), _, Some(digest)) => digest.check(head).await,
            (Some("basic"), Some(basic), _) => basic.check(head).await,
            _ => Outcome::Rejected(None),
        }
    }

    /// A 407's `Proxy-Authenticate` lines: one per scheme, Basic first.
    pub fn challenges(&self) -> String {
        let mut lines = self
            .basic
            .as_ref()
            .map(|b| b.challenge().to_string())
            .unwrap_or_default();
        if let Some(digest) = &self.digest {
            lines.push_str(&digest.challenge(false));
        }
        lines
    }
}

/// What checking one request's credentials found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The helper accepted them: the user name (as `%un` logs it).
    User(String),
    /// No Basic credentials, malformed ones, or the helper said ERR: with the user name
    /// that was tried, which Squid logs as `%un` too.
    Rejected(Option<String>),
    /// The helper could not say (BH, crashed, no answer): refused too. Why, and who tried.
    Unavailable(String, String),
}

impl BasicScheme {
    /// Starts the helpers (inside a tokio runtime).
    pub fn start(config: BasicAuth) -> BasicScheme {
        let helpers = Helpers::start(config.helper.clone());
        let challenge = format!("Proxy-Authenticate: Basic realm=\"{}\"\r\n", config.realm);
        BasicScheme {
            config,
            helpers,
            accepted: ExpiringMap::new(MAX_REMEMBERED),
            challenge,
        }
    }

    /// The header line a 407 carries.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// Checks the request's `Proxy-Authorization`.
    pub async fn check(&self, head: &Head) -> Outcome {
        let Some((user, password)) = basic_credentials(head) else {
            return Outcome::Rejected(None);
        };
        let user = if self.config.case_sensitive {
            user
        } else {
            user.to_lowercase()
        };
        let key = format!("{user}:{password}");
        if let Some(user) = self.accepted.get(&key) {
            return Outcome::User(user);
        }
        let line = format!(
            "{} {}",
            crate::helper::escape_field(&user),
            crate::helper::escape_field(&password)
        );
        let answer = self.helpers.ask(line).await;
        match answer.verdict {
            Verdict::Ok => {
                self.accepted
                    .insert(key, user.clone(), self.config.credentials_ttl);
                Outcome::User(user)
            }
            Verdict::Err => Outcome::Rejected(Some(user)),
            Verdict::Broken | Verdict::Legacy => Outcome::Unavailable(
                answer
                    .get("message")
                    .unwrap_or(answer.rest.as_str())
                    .to_string(),
                user,
            ),
        }
    }
}

/// `Proxy-Authorization: Basic BASE64(user:password)`; `None` when absent, another scheme,
/// or not decodable.
pub fn basic_credentials(head: &Head) -> Option<(String, String)> {
    let value = head.values("proxy-authorization").next()?;
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn head(authorization: &str) -> Head {
        let mut buf = BytesMut::from(
            format!("GET http://h.test/ HTTP/1.1\r\nHost: h.test\r\n{authorization}\r\n").as_str(),
        );
        Head::parse_request(&mut buf, 65536).unwrap().unwrap()
    }

    #[test]
    fn credentials_are_decoded_and_escaped() {
        // alice:open sesame
        let h = head("Proxy-Authorization: Basic YWxpY2U6b3BlbiBzZXNhbWU=\r\n");
        assert_eq!(
            basic_credentials(&h),
            Some(("alice".into(), "open sesame".into()))
        );
        assert_eq!(
            crate::helper::escape_field("open sesame\n"),
            "open%20sesame%0A"
        );
        assert_eq!(
            basic_credentials(&head("Proxy-Authorization: Digest x\r\n")),
            None
        );
        assert_eq!(
            basic_credentials(&head("Proxy-Authorization: Basic !!\r\n")),
            None
        );
        assert_eq!(basic_credentials(&head("X: y\r\n")), None);
    }
}
