//! `access_log` lines: where transactions are logged, and which ones.

use std::path::PathBuf;

use super::parse::{Directive, Parser, PendingLog};
use super::ConfigError;

/// Log formats Squid has built in; only `squid` is written by proxyfleet.
const SQUID_LOG_FORMATS: &[&str] = &[
    "squid",
    "common",
    "combined",
    "referrer",
    "useragent",
    "icap_squid",
];

impl Parser {
    /// `access_log none [acl...]` or `access_log [stdio:|daemon:]PATH [squid|option=...]
    /// [[!]acl...]`. Like Squid, a bare word after the path is a log format when it names
    /// one and otherwise the first ACL.
    pub(super) fn access_log(&mut self, d: &Directive) -> Result<(), ConfigError> {
        self.saw_access_log = true;
        let t = d.arg(0, "log file path or 'none'")?;
        if t.text == "none" {
            let refs = self.acl_refs(d, &d.args[1..])?;
            self.logs.push(PendingLog::None {
                refs,
                location: d.location(),
            });
            return Ok(());
        }
        let path = log_path(&t.text).map_err(|m| d.error(t, m))?;
        let mut rest = &d.args[1..];
        while let Some(next) = rest.first() {
            let format = match next.text.split_once('=') {
                Some(("logformat", format)) => format,
                Some(_) => return Err(d.error(next, format!("unsupported option '{}'", next.text))),
                None if SQUID_LOG_FORMATS.contains(&next.text.as_str()) => &next.text,
                None => break,
            };
            if format != "squid" {
                return Err(d.error(
                    next,
                    format!("log format '{format}' is not supported (only 'squid' is)"),
                ));
            }
            rest = &rest[1..];
        }
        let refs = self.acl_refs(d, rest).map_err(|e| {
            // A word that is neither: say both possibilities.
            match rest.first() {
                Some(first) if !self.is_acl_ref(&first.text) => d.error(
                    first,
                    format!(
                        "'{}' is neither a defined acl nor a supported log format (only \
                         'squid' is supported)",
                        first.text
                    ),
                ),
                _ => e,
            }
        })?;
        self.logs.push(PendingLog::File {
            path,
            refs,
            location: d.location(),
        });
        Ok(())
    }

    fn is_acl_ref(&self, text: &str) -> bool {
        let name = text.strip_prefix('!').unwrap_or(text);
        self.acls.contains_key(name)
    }
}

/// The file of an `access_log` line, without its logging-module prefix.
fn log_path(text: &str) -> Result<PathBuf, String> {
    let path = match text.split_once(':') {
        Some(("stdio" | "daemon", path)) => path,
        Some((module @ ("syslog" | "tcp" | "udp"), _)) => {
            return Err(format!(
                "the '{module}' logging module is not supported (use a file path, optionally \
                 with stdio: or daemon:)"
            ))
        }
        _ => text,
    };
    if path.is_empty() {
        return Err(format!("'{text}' names no file"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::{assert_errors, parse_ok, Request};

    #[test]
    fn access_log_forms() {
        let c = parse_ok(
            "access_log stdio:/var/log/a.log\n\
             access_log daemon:/var/log/b.log squid\n\
             access_log /var/log/c.log logformat=squid localhost\n\
             access_log /var/log/d.log !localhost CONNECT\n",
        );
        let logs: Vec<_> = c
            .access_logs
            .iter()
            .map(|l| (l.path.to_str().unwrap(), l.acls.0.len(), l.location.line))
            .collect();
        assert_eq!(
            logs,
            [
                ("/var/log/a.log", 0, 1),
                ("/var/log/b.log", 0, 2),
                ("/var/log/c.log", 1, 3),
                ("/var/log/d.log", 2, 4),
            ]
        );
        let r = Request::connect("192.0.2.1", "example.com", 443);
        assert!(c.access_logs[3].acls.matches(&r.facts()));
        assert!(!c.access_logs[2].acls.matches(&r.facts()));

        assert!(parse_ok("access_log none").access_logs.is_empty());
    }

    #[test]
    fn access_log_none_silences_later_lines() {
        let c = parse_ok(
            "acl lan src 10.0.0.0/8\n\
             access_log /a.log\n\
             access_log none lan\n\
             access_log /b.log\n\
             access_log none localhost CONNECT\n\
             access_log /c.log\n\
             access_log none\n\
             access_log /d.log\n",
        );
        let paths: Vec<_> = c.access_logs.iter().map(|l| l.path.clone()).collect();
        assert_eq!(
            paths,
            [
                Path::new("/a.log"),
                Path::new("/b.log"),
                Path::new("/c.log")
            ]
        );
        let logged = |r: &Request| -> Vec<bool> {
            c.access_logs
                .iter()
                .map(|l| l.acls.matches(&r.facts()))
                .collect()
        };
        assert_eq!(
            logged(&Request::get("10.0.0.1", "h", 80)),
            [true, false, false]
        );
        assert_eq!(
            logged(&Request::get("127.0.0.1", "h", 80)),
            [true, true, true]
        );
        assert_eq!(
            logged(&Request::connect("127.0.0.1", "h", 443)),
            [true, true, false]
        );
    }

    #[test]
    fn access_log_errors() {
        let cases = [
            (
                "access_log",
                "1:11: access_log: missing log file path or 'none'",
            ),
            (
                "access_log /x common",
                "1:15: access_log: log format 'common' is not supported (only 'squid' is)",
            ),
            (
                "access_log /x logformat=combined",
                "1:15: access_log: log format 'combined' is not supported (only 'squid' is)",
            ),
            (
                "access_log /x rotate=3",
                "1:15: access_log: unsupported option 'rotate=3'",
            ),
            (
                "access_log syslog:daemon.info",
                "1:12: access_log: the 'syslog' logging module is not supported (use a file \
                 path, optionally with stdio: or daemon:)",
            ),
            (
                "access_log stdio:",
                "1:12: access_log: 'stdio:' names no file",
            ),
            (
                "access_log /x fancy",
                "1:15: access_log: 'fancy' is neither a defined acl nor a supported log format \
                 (only 'squid' is supported)",
            ),
            (
                "access_log /x localhost nosuch",
                "1:25: access_log: unknown acl 'nosuch' (acls must be defined before they are \
                 used)",
            ),
        ];
        assert_errors(&cases);
    }
}
