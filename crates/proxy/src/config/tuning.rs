//! Squid's on/off switches and tuning directives that change how proxyfleet behaves
//! (`strip_query_terms`, persistent connections, `pconn_timeout`, `positive_dns_ttl`,
//! `httpd_suppress_version_string`, `debug_options`), and old names that mean a supported
//! directive (`cache_access_log`, `no_cache`).

use super::parse::{Directive, Parser};
use super::ConfigError;

impl Parser {
    /// `NAME on|off`; like Squid, also `enable` / `disable`.
    pub(super) fn flag(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let value = on_off(d)?;
        match d.name.text.as_str() {
            "strip_query_terms" => self.strip_query_terms = value,
            "httpd_suppress_version_string" => self.httpd_suppress_version_string = value,
            "client_persistent_connections" => self.client_persistent_connections = value,
            "server_persistent_connections" => self.server_persistent_connections = value,
            "via" => self.via = value,
            "prefer_direct" => self.prefer_direct = value,
            "nonhierarchical_direct" => self.nonhierarchical_direct = value,
            "acl_uses_indirect_client" => self.acl_uses_indirect_client = value,
            "log_uses_indirect_client" => self.log_uses_indirect_client = value,
            // There are no delay pools.
            "delay_pool_uses_indirect_client" => {}
            name => unreachable!("not an on/off directive: {name}"),
        }
        Ok(())
    }

    /// `icap_enable on|off`: off (Squid's default) is accepted; on is refused, since
    /// requests the file means to send through an ICAP service (a virus scanner, a filter)
    /// would pass unscanned.
    pub(super) fn icap_enable(&mut self, d: &Directive) -> Result<(), ConfigError> {
        if on_off(d)? {
            return Err(d.error(
                &d.args[0],
                "ICAP is not supported: the services this file adapts requests with would be \
                 skipped (use icap_enable off to run without them)",
            ));
        }
        Ok(())
    }

    /// `reply_body_max_size none` (Squid's default) is accepted; a limit is refused rather
    /// than not enforced.
    pub(super) fn reply_body_max_size(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "size or none")?;
        if t.text == "none" && d.args.len() == 1 {
            return Ok(());
        }
        Err(d.error(
            t,
            "reply size limits are not supported (only 'reply_body_max_size none')",
        ))
    }

    /// `debug_options [rotate=N] SECTION,LEVEL...`: the level of section `ALL` (the last
    /// one given wins, as in Squid) sets how much the proxy says on standard error when
    /// `RUST_LOG` does not: 0 errors only, 1 (Squid's default) notices, 2 and more debug.
    /// Levels of single sections cannot be told apart here, so they are accepted and noted.
    pub(super) fn debug_options(&mut self, d: &Directive) -> Result<(), ConfigError> {
        for t in d.args {
            if t.text.starts_with("rotate=") {
                continue;
            }
            let Some((section, level)) = t.text.split_once(',') else {
                return Err(d.error(t, format!("'{}' is not SECTION,LEVEL", t.text)));
            };
            let level: u8 = level
                .parse()
                .ok()
                .filter(|l| *l <= 9)
                .ok_or_else(|| d.error(t, format!("'{level}' is not a debug level (0-9)")))?;
            if section.eq_ignore_ascii_case("all") {
                self.debug_level = Some(level);
            } else if section.parse::<u16>().is_err() {
                return Err(d.error(t, format!("'{section}' is not a section number or ALL")));
            }
        }
        Ok(())
    }
}

/// Squid's boolean words.
pub(super) fn on_off(d: &Directive) -> Result<bool, ConfigError> {
    let t = d.arg(0, "'on' or 'off'")?;
    d.no_more(1)?;
    match t.text.as_str() {
        "on" | "enable" => Ok(true),
        "off" | "disable" => Ok(false),
        _ => Err(d.error(t, format!("expected 'on' or 'off', found '{}'", t.text))),
    }
}

/// How `debug_options`' level for ALL reads as a `tracing` filter.
pub fn debug_filter(level: u8) -> &'static str {
    match level {
        0 => "error",
        1 => "info",
        2..=8 => "debug",
        _ => "trace",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{assert_errors, parse_ok};
    use super::*;

    #[test]
    fn switches_and_their_defaults() {
        let c = parse_ok("");
        assert!(c.strip_query_terms);
        assert!(!c.httpd_suppress_version_string);
        assert!(c.client_persistent_connections);
        assert!(c.server_persistent_connections);
        assert_eq!(c.server_idle_pconn_timeout, Duration::from_secs(60));
        assert_eq!(c.positive_dns_ttl, Duration::from_secs(6 * 3600));
        assert_eq!(c.debug_level, None);
        let c = parse_ok(
            "strip_query_terms off\n\
             httpd_suppress_version_string on\n\
             client_persistent_connections off\n\
             server_persistent_connections disable\n\
             pconn_timeout 30 seconds\n\
             positive_dns_ttl 1 minute\n\
             debug_options rotate=1 ALL,1 33,2 ALL,2\n",
        );
        assert!(!c.strip_query_terms);
        assert!(c.httpd_suppress_version_string);
        assert!(!c.client_persistent_connections);
        assert!(!c.server_persistent_connections);
        assert_eq!(c.server_idle_pconn_timeout, Duration::from_secs(30));
        assert_eq!(c.positive_dns_ttl, Duration::from_secs(60));
        assert_eq!(c.debug_level, Some(2));
        assert_eq!(debug_filter(2), "debug");
        assert_eq!(
            parse_ok("server_idle_pconn_timeout 2 minutes").server_idle_pconn_timeout,
            Duration::from_secs(120)
        );
        let cases = [
            (
                "strip_query_terms yes",
                "1:19: strip_query_terms: expected 'on' or 'off', found 'yes'",
            ),
            (
                "debug_options ALL",
                "1:15: debug_options: 'ALL' is not SECTION,LEVEL",
            ),
            (
                "debug_options ALL,10",
                "1:15: debug_options: '10' is not a debug level (0-9)",
            ),
        ];
        assert_errors(&cases);
    }

    /// Squid keeps `forwarded_for`'s word as a string: a word it does not know (`yes`, the
    /// Squid 2 spellings) adds no header and passes none on, which is `delete`.
    #[test]
    fn forwarded_for_unknown_words_mean_delete_with_a_note() {
        let c = parse_ok("forwarded_for yes");
        assert_eq!(c.forwarded_for, super::super::ForwardedFor::Delete);
        assert_eq!(c.notes.len(), 1);
        assert!(c.notes[0].1.contains("'yes'"), "{:?}", c.notes);
    }

    #[test]
    fn old_names() {
        let c = parse_ok("cache_access_log /var/log/squid/old.log\nno_cache deny all\n");
        assert_eq!(c.access_logs.len(), 1);
        assert_eq!(
            c.access_logs[0].path,
            std::path::Path::new("/var/log/squid/old.log")
        );
        assert_eq!(c.ignored[0].0, "no_cache");
    }
}
