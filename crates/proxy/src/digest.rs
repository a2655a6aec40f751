//! `auth_param digest`: RFC 2617's Digest scheme, with Squid's helper protocol for the
//! passwords (`digest_file_auth` and friends answer `OK ha1="..."` to `"user":"realm"`).
//! The proxy issues nonces (remembered for `nonce_max_duration`, usable `nonce_max_count`
//! times), and checks each request's `response` against MD5(HA1:nonce:nc:cnonce:qop:HA2)
//! with HA2 = MD5(method:uri), or the RFC 2069 form without `qop`.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};

use crate::auth::Outcome;
use crate::expiring::ExpiringMap;
use crate::helper::{HelperSpec, Helpers, Verdict};
use crate::http::head::Head;

/// `auth_param digest ...` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestAuth {
    pub helper: HelperSpec,
    pub realm: String,
    /// `nonce_max_duration` (default 30 minutes).
    pub nonce_max_duration: Duration,
    /// `nonce_max_count` (default 50): requests one nonce may authenticate.
    pub nonce_max_count: u32,
}

/// Nonces issued at most at once; the oldest go first past it.
const MAX_NONCES: usize = 50_000;

pub struct DigestScheme {
    config: DigestAuth,
    helpers: Helpers,
    /// HA1 by `user:realm`, as the helper gave it.
    ha1: ExpiringMap<String>,
    /// Issued nonces: when, and how many requests used each.
    nonces: Mutex<HashMap<String, (Instant, u32)>>,
    secret: [u8; 16],
    counter: AtomicU64,
}

impl DigestScheme {
    /// Starts the helpers (inside a tokio runtime).
    pub fn start(config: DigestAuth) -> DigestScheme {
        let mut secret = [0u8; 16];
        // The nonces' unpredictability; without /dev/urandom, the clock's nanoseconds.
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut secret))
            .is_err()
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            secret[..16].copy_from_slice(&now.as_nanos().to_le_bytes());
        }
        DigestScheme {
            helpers: Helpers::start(config.helper.clone()),
            ha1: ExpiringMap::new(10_000),
            nonces: Mutex::new(HashMap::new()),
            secret,
            counter: AtomicU64::new(0),
            config,
        }
    }

    /// A 407's `Proxy-Authenticate` line, with a new nonce.
    pub fn challenge(&self, stale: bool) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut h = Md5::new();
        h.update(self.secret);
        h.update(n.to_le_bytes());
        h.update(format!("{:?}", Instant::now()).as_bytes());
        let nonce = hex(&h.finalize());
        {
            let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
            if nonces.len() >= MAX_NONCES {
                let limit = self.config.nonce_max_duration;
                nonces.retain(|_, (at, _)| at.elapsed() < limit);
                if nonces.len() >= MAX_NONCES {
                    nonces.clear();
                }
            }
            nonces.insert(nonce.clone(), (Instant::now(), 0));
        }
        format!(
            "Proxy-Authenticate: Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", stale={}\r\n",
            self.config.realm,
            if stale { "true" } else { "false" }
        )
    }

    /// Checks the request's `Proxy-Authorization: Digest`.
    pub async fn check(&self, head: &Head) -> Outcome {
        let Some(params) = digest_params(head) else {
            return Outcome::Rejected(None);
        };
        let get = |k: &str| params.get(k).map(String::as_str);
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return Outcome::Rejected(None);
        };
        let user = user.to_string();
        if realm != self.config.realm || !self.use_nonce(nonce) {
            return Outcome::Rejected(Some(user));
        }
        let key = format!("{user}:{realm}");
        let ha1 = match self.ha1.get(&key) {
            Some(ha1) => ha1,
            None => {
                let answer = self.helpers.ask(format!("\"{user}\":\"{realm}\"")).await;
                let ha1 = match answer.verdict {
                    Verdict::Ok => answer.get("ha1").map(str::to_string),
                    // Squid 2's answer: the HA1 alone.
                    Verdict::Legacy if answer.rest.len() == 32 => Some(answer.rest.clone()),
                    Verdict::Err => return Outcome::Rejected(Some(user)),
                    _ => None,
                };
                let Some(ha1) = ha1 else {
                    return Outcome::Unavailable(answer.rest, user);
                };
                let ha1 = ha1.to_ascii_lowercase();
                self.ha1
                    .insert(key, ha1.clone(), self.config.nonce_max_duration);
                ha1
            }
        };
        let ha2 = md5_hex(&format!("{}:{uri}", head.method()));
        let expected = match (get("qop"), get("nc"), get("cnonce")) {
            (Some(qop), Some(nc), Some(cnonce)) if qop.eq_ignore_ascii_case("auth") => {
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
            }
            (None, _, _) => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
            _ => return Outcome::Rejected(Some(user)),
        };
        if expected.eq_ignore_ascii_case(response) {
            Outcome::User(user)
        } else {
            Outcome::Rejected(Some(user))
        }
    }

    /// Whether `nonce` is one of ours, young enough and not used too often; counts the use.
    fn use_nonce(&self, nonce: &str) -> bool {
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        match nonces.get_mut(nonce) {
            Some((at, uses))
                if at.elapsed() < self.config.nonce_max_duration
                    && *uses < self.config.nonce_max_count =>
            {
                *uses += 1;
                true
            }
            _ => false,
        }
    }
}

/// The `key=value` pairs of `Proxy-Authorization: Digest ...` (values unquoted).
fn digest_params(head: &Head) -> Option<HashMap<String, String>> {
    let value = head.values("proxy-authorization").next()?;
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        params.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

pub fn md5_hex(text: &str) -> String {
    hex(&Md5::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example() {
        // RFC 2617 §3.5: Mufasa / Circle Of Life.
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let response = md5_hex(&format!(
            "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"
        ));
        assert_eq!(response, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn parameters_quoted_and_bare() {
        let mut buf = bytes::BytesMut::from(
            &b"GET http://h/ HTTP/1.1\r\nProxy-Authorization: Digest username=\"a b\", realm=\"R\", nc=00000001, qop=auth, uri=\"/x,y\"\r\n\r\n"[..],
        );
        let head = Head::parse_request(&mut buf, 65536).unwrap().unwrap();
        let p = digest_params(&head).unwrap();
        assert_eq!(p["username"], "a b");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["qop"], "auth");
        assert_eq!(p["uri"], "/x,y");
    }
}
