//! `auth_param SCHEME PARAMETER VALUE...` lines: the Basic and Digest schemes and their
//! helpers. NTLM and Negotiate are refused with a message that says so.

use std::time::Duration;

use super::directives::unit_error;
use super::model::BasicAuth;
use super::parse::{Directive, Parser};
use super::tuning::on_off;
use super::units;
use super::ConfigError;

/// Squid 5's default `realm`.
pub const DEFAULT_REALM: &str = "Squid proxy-caching web server";

/// `auth_param basic` settings before any line: Squid's defaults, and no program yet (the
/// scheme is configured once a `program` line gives one).
pub(super) fn default_basic() -> BasicAuth {
    BasicAuth {
        helper: crate::helper::HelperSpec {
            role: "basic auth".into(),
            argv: Vec::new(),
            // Squid's `children 20 startup=0 idle=1`.
            max_children: 20,
            startup: 0,
            concurrency: 0,
        },
        realm: DEFAULT_REALM.into(),
        credentials_ttl: Duration::from_secs(2 * 60 * 60),
        case_sensitive: false,
        location: None,
    }
}

/// `auth_param digest` before any line: Squid's defaults.
pub(super) fn default_digest() -> crate::digest::DigestAuth {
    crate::digest::DigestAuth {
        helper: crate::helper::HelperSpec {
            role: "digest auth".into(),
            argv: Vec::new(),
            max_children: 20,
            startup: 0,
            concurrency: 0,
        },
        realm: DEFAULT_REALM.into(),
        nonce_max_duration: Duration::from_secs(30 * 60),
        nonce_max_count: 50,
    }
}

impl Parser {
    /// `auth_param digest program|children|realm|nonce_max_duration|nonce_max_count|...`.
    fn auth_param_digest(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let param = d.arg(
            1,
            "parameter (program, children, realm, nonce_max_duration, ...)",
        )?;
        let values = &d.args[2..];
        let digest = &mut self.digest_auth;
        match param.text.as_str() {
            "program" => {
                if values.is_empty() {
                    return Err(d.missing("helper program"));
                }
                digest.helper.argv = values.iter().map(|t| t.text.clone()).collect();
            }
            "children" => helper_children(d, values, &mut digest.helper)?,
            "realm" => digest.realm = realm(d, values)?,
            "nonce_max_duration" => {
                let n = d.arg(2, "time (e.g. 30 minutes)")?;
                let unit = d.args.get(3);
                digest.nonce_max_duration =
                    units::parse_time(&n.text, unit.map(|u| u.text.as_str()))
                        .map_err(|e| unit_error(d, n, unit, e))?;
            }
            "nonce_max_count" => {
                let n = d.arg(2, "number of uses")?;
                digest.nonce_max_count = n
                    .text
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| d.error(n, format!("'{}' is not a positive number", n.text)))?;
            }
            // Garbage collection timing, nonce-count strictness, and encodings: nonces here
            // expire on their own and every count up to nonce_max_count is accepted.
            "nonce_garbage_interval"
            | "nonce_strictness"
            | "check_nonce_count"
            | "post_workaround"
            | "utf8" => {}
            other => {
                self.notes.push((
                    d.location_of(param),
                    format!("unknown digest parameter '{other}' ignored, as Squid does"),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn auth_param(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let scheme = d.arg(0, "scheme (basic)")?;
        match scheme.text.as_str() {
            "basic" => {}
            "digest" => return self.auth_param_digest(d),
            "ntlm" | "negotiate" => {
                return Err(d.error(
                    scheme,
                    format!(
                        "the '{}' scheme is not supported (basic and digest are): its clients \
                         would never authenticate",
                        scheme.text
                    ),
                ))
            }
            other => return Err(d.error(scheme, format!("unknown scheme '{other}'"))),
        }
        let param = d.arg(
            1,
            "parameter (program, children, realm, credentialsttl, ...)",
        )?;
        let values = &d.args[2..];
        let basic = &mut self.basic_auth;
        match param.text.as_str() {
            "program" => {
                if values.is_empty() {
                    return Err(d.missing("helper program"));
                }
                basic.helper.argv = values.iter().map(|t| t.text.clone()).collect();
                basic.location = Some(d.location_of(&values[0]));
            }
            "children" => helper_children(d, values, &mut basic.helper)?,
            "realm" => basic.realm = realm(d, values)?,
            "credentialsttl" => {
                let n = d.arg(2, "time (e.g. 2 hours)")?;
                let unit = d.args.get(3);
                d.no_more(4)?;
                basic.credentials_ttl = units::parse_time(&n.text, unit.map(|u| u.text.as_str()))
                    .map_err(|e| unit_error(d, n, unit, e))?;
            }
            "casesensitive" => basic.case_sensitive = on_off_at(d, 2)?,
            // The helper's own encoding, and Squid's reuse of helper connections.
            "utf8" | "keep_alive" => {
                on_off_at(d, 2)?;
            }
            other => {
                // Squid 5.7: "Unrecognised basic auth scheme parameter", and goes on.
                self.notes.push((
                    d.location_of(param),
                    format!(
                        "unknown basic parameter '{other}' ignored, as Squid does (known: \
                         program, children, realm, credentialsttl, casesensitive, utf8, \
                         keep_alive)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `on|off` as the argument at `index`.
/// `children N [startup=N] [idle=N] [concurrency=N] [queue-size=N] ...` of any helper
/// (`values` from the N on).
pub(super) fn helper_children(
    d: &Directive,
    values: &[super::lex::Token],
    spec: &mut crate::helper::HelperSpec,
) -> Result<(), ConfigError> {
    let n = values
        .first()
        .ok_or_else(|| d.missing("number of children"))?;
    spec.max_children = match n.text.parse::<usize>() {
        Ok(n @ 1..=1000) => n,
        _ => return Err(d.error(n, format!("'{}' is not 1 to 1000", n.text))),
    };
    for option in &values[1..] {
        let (key, value) = option.text.split_once('=').unwrap_or((&option.text, ""));
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| d.error(option, format!("'{value}' is not a number")))
        };
        match key {
            "startup" => spec.startup = number()?,
            "concurrency" => spec.concurrency = number()?,
            // Spare children and queue tuning: children start on demand here.
            "idle" | "queue-size" | "on-persistent-overload" | "reservation-timeout" => {}
            _ => return Err(d.error(option, format!("unknown children option '{}'", option.text))),
        }
    }
    spec.startup = spec.startup.min(spec.max_children);
    Ok(())
}

/// `realm TEXT...`: several words (or one quoted string), with no `"` or `\` (it goes
/// into a quoted `Proxy-Authenticate` parameter).
fn realm(d: &Directive, values: &[super::lex::Token]) -> Result<String, ConfigError> {
    if values.is_empty() {
        return Err(d.missing("realm"));
    }
    let realm: Vec<&str> = values.iter().map(|t| t.text.as_str()).collect();
    let realm = realm.join(" ");
    if realm.contains(['"', '\\']) {
        return Err(d.error(&values[0], "a realm cannot contain '\"' or '\\'"));
    }
    Ok(realm)
}

fn on_off_at(d: &Directive, index: usize) -> Result<bool, ConfigError> {
    let shifted = Directive {
        file: d.file,
        name: d.name,
        args: &d.args[index.min(d.args.len())..],
        end: d.end,
    };
    on_off(&shifted)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_errors, parse_ok};
    use super::*;

    #[test]
    fn basic_auth_lines() {
        let c = parse_ok(
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth /etc/squid/passwd\n\
             auth_param basic children 5 startup=2 idle=1 concurrency=3\n\
             auth_param basic realm Proxy of Example Corp\n\
             auth_param basic credentialsttl 30 minutes\n\
             auth_param basic casesensitive on\n\
             acl authed proxy_auth REQUIRED\n\
             http_access allow authed\n",
        );
        let b = c.basic_auth.expect("configured");
        assert_eq!(
            b.helper.argv,
            ["/usr/lib/squid/basic_ncsa_auth", "/etc/squid/passwd"]
        );
        assert_eq!(
            (
                b.helper.max_children,
                b.helper.startup,
                b.helper.concurrency
            ),
            (5, 2, 3)
        );
        assert_eq!(b.realm, "Proxy of Example Corp");
        assert_eq!(b.credentials_ttl, Duration::from_secs(1800));
        assert!(b.case_sensitive);
        let c =
            parse_ok("auth_param basic program /bin/true\nauth_param basic realm \"Corp Proxy\"");
        let b = c.basic_auth.unwrap();
        assert_eq!(b.realm, "Corp Proxy");
        assert_eq!(b.helper.max_children, 20);
        assert!(!b.case_sensitive);
        assert!(parse_ok("http_access allow all").basic_auth.is_none());
    }

    #[test]
    fn digest_lines() {
        let c = parse_ok(
            "auth_param digest program /usr/lib/squid/digest_file_auth -c /etc/squid/digest\n\
             auth_param digest children 5 startup=1\n\
             auth_param digest realm Corp Proxy\n\
             auth_param digest nonce_max_duration 10 minutes\n\
             auth_param digest nonce_max_count 20\n\
             auth_param digest nonce_garbage_interval 5 minutes\n\
             acl users proxy_auth REQUIRED\n\
             http_access allow users\n",
        );
        let d = c.digest_auth.expect("configured");
        assert_eq!(d.helper.argv[0], "/usr/lib/squid/digest_file_auth");
        assert_eq!((d.helper.max_children, d.realm.as_str()), (5, "Corp Proxy"));
        assert_eq!(
            (d.nonce_max_duration.as_secs(), d.nonce_max_count),
            (600, 20)
        );
        assert!(c.basic_auth.is_none());
    }

    #[test]
    fn auth_errors() {
        let cases = [
            (
                "auth_param ntlm program /usr/bin/ntlm_auth",
                "1:12: auth_param: the 'ntlm' scheme is not supported (basic and digest are): \
                 its clients would never authenticate",
            ),
            (
                "auth_param basic children lots",
                "1:27: auth_param: 'lots' is not 1 to 1000",
            ),
            (
                "acl a proxy_auth REQUIRED\nhttp_access allow a",
                "1:5: acl 'a' of type proxy_auth needs an 'auth_param basic program' line before it",
            ),
            (
                "auth_param basic realm x\nacl a proxy_auth REQUIRED\nhttp_access allow a",
                "2:5: acl 'a' of type proxy_auth needs an 'auth_param basic program' line before it",
            ),
        ];
        assert_errors(&cases);
    }
}
