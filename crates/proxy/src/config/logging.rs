//! `access_log` lines: where transactions are logged, and which ones.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::lex::Token;
use super::parse::{Directive, Parser, PendingLog};
use super::ConfigError;
use crate::log_format::LogFormat;

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
        let (path, udp, syslog, tcp) = log_path(&t.text).map_err(|m| d.error(t, m))?;
        let mut format = None;
        let mut rest = &d.args[1..];
        while let Some(next) = rest.first() {
            let name = match next.text.split_once('=') {
                Some(("logformat", name)) => name,
                // Each line is written whole with its own write(2): there is no buffer.
                Some(("buffer-size", _)) => {
                    rest = &rest[1..];
                    continue;
                }
                Some(("rotate", _)) => {
                    self.ignored
                        .push(("access_log rotate=".to_owned(), d.location_of(next)));
                    rest = &rest[1..];
                    continue;
                }
                Some(("on-error", "drop")) => {
                    rest = &rest[1..];
                    continue;
                }
                Some(("on-error", "die")) => {
                    // Squid exits; proxyfleet stops serving what it cannot log instead.
                    self.logfile_error_policy = crate::access_log::LogErrorPolicy::Refuse;
                    self.notes.push((
                        d.location_of(next),
                        "access_log on-error=die: while this log cannot be written, requests \
                         are refused (logfile_error_policy refuse) rather than the proxy \
                         exiting"
                            .into(),
                    ));
                    rest = &rest[1..];
                    continue;
                }
                Some(_) => return Err(d.error(next, format!("unsupported option '{}'", next.text))),
                None if self.log_format(&next.text).is_some() => next.text.as_str(),
                None => break,
            };
            format = Some(self.log_format(name).ok_or_else(|| {
                d.error(next, format!("logformat '{name}' is not defined (define it with a logformat line before this one)"))
            })?);
            rest = &rest[1..];
        }
        let refs = self.acl_refs(d, rest).map_err(|e| {
            // A word that is neither: say both possibilities.
            match rest.first() {
                Some(first) if !self.is_acl_ref(&first.text) => d.error(
                    first,
                    format!(
                        "'{}' is neither a defined acl nor a log format (built in: squid, \
                         common, combined, referrer, useragent; or one a logformat line \
                         defines)",
                        first.text
                    ),
                ),
                _ => e,
            }
        })?;
        self.logs.push(PendingLog::File {
            path,
            udp,
            syslog,
            tcp,
            format: format.flatten(),
            refs,
            location: d.location(),
        });
        Ok(())
    }

    /// A log format by name: `Some(None)` for the native `squid` one.
    fn log_format(&self, name: &str) -> Option<Option<LogFormat>> {
        if name == "squid" {
            return Some(None);
        }
        if let Some(f) = self.log_formats.get(name) {
            return Some(Some(f.clone()));
        }
        LogFormat::built_in(name).map(Some)
    }

    /// `logformat NAME FORMAT`: the format is the rest of the line as written (or one
    /// quoted string). Squid's built-in names cannot be redefined: Squid 5.7 says "logformat
    /// squid is already defined. Ignoring." and so does proxyfleet, at start-up.
    pub(super) fn logformat(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name = d.arg(0, "format name")?;
        let first = d.arg(1, "format (e.g. %ts.%03tu %>a %rm %ru)")?;
        let text = if d.args.len() == 2 && first.quoted {
            first.text.clone()
        } else {
            rest_of_line(&d.args[1..])
        };
        if name.text == "squid"
            || LogFormat::built_in(&name.text).is_some()
            || self.log_formats.contains_key(&name.text)
        {
            self.notes.push((
                d.location_of(name),
                format!(
                    "logformat {} is already defined: this line is ignored (as Squid 5.7 does)",
                    name.text
                ),
            ));
            return Ok(());
        }
        let format = LogFormat::parse(&text).map_err(|why| d.error(first, why))?;
        self.log_formats.insert(name.text.clone(), format);
        Ok(())
    }

    fn is_acl_ref(&self, text: &str) -> bool {
        let name = text.strip_prefix('!').unwrap_or(text);
        self.acls.contains_key(name)
    }
}

/// Tokens as they were written: quoted ones with their quotes, and the blanks between
/// tokens of one line kept (a format's spacing is part of it).
pub(super) fn rest_of_line(tokens: &[Token]) -> String {
    let mut text = String::new();
    let mut end: Option<(usize, usize)> = None;
    for t in tokens {
        let raw = t.raw();
        match end {
            Some((line, column)) if line == t.line && t.column > column => {
                text.extend(std::iter::repeat_n(' ', t.column - column));
            }
            Some(_) => text.push(' '),
            None => {}
        }
        end = Some((t.line, t.column + raw.chars().count()));
        text.push_str(&raw);
    }
    text
}

/// Where an `access_log` line writes: the file (its logging-module prefix removed), or the
/// address of a `udp://HOST:PORT` one (an address: a name would be looked up at every
/// start), or the syslog priority of a `syslog[:FACILITY[.PRIORITY]]` one, or the address
/// of a `tcp://HOST:PORT` one.
type LogDestination = (PathBuf, Option<SocketAddr>, Option<u8>, Option<SocketAddr>);

fn log_path(text: &str) -> Result<LogDestination, String> {
    for (module, tcp) in [("udp", false), ("tcp", true)] {
        let Some(address) = text.strip_prefix(&format!("{module}://")) else {
            continue;
        };
        let address = address.trim_end_matches('/');
        let to: SocketAddr = address.parse().map_err(|_| {
            format!(
                "'{address}' is not an address and port ({module}://ADDRESS:PORT, e.g. \
                 {module}://127.0.0.1:514)"
            )
        })?;
        return Ok(if tcp {
            (PathBuf::from(text), None, None, Some(to))
        } else {
            (PathBuf::from(text), Some(to), None, None)
        });
    }
    if text == "syslog" || text.starts_with("syslog:") {
        let priority = syslog_priority(text.strip_prefix("syslog:").unwrap_or(""))?;
        return Ok((PathBuf::from(text), None, Some(priority), None));
    }
    let path = match text.split_once(':') {
        Some(("stdio" | "daemon", path)) => path,
        _ => text,
    };
    if path.is_empty() {
        return Err(format!("'{text}' names no file"));
    }
    Ok((PathBuf::from(path), None, None, None))
}

/// `FACILITY[.PRIORITY]` as Squid reads it (default `local4.info`, as Squid's): the syslog
/// PRI value, facility × 8 + severity.
fn syslog_priority(spec: &str) -> Result<u8, String> {
    const FACILITIES: &[(&str, u8)] = &[
        ("kern", 0),
        ("user", 1),
        ("mail", 2),
        ("daemon", 3),
        ("auth", 4),
        ("syslog", 5),
        ("lpr", 6),
        ("news", 7),
        ("uucp", 8),
        ("cron", 9),
        ("authpriv", 10),
        ("ftp", 11),
        ("local0", 16),
        ("local1", 17),
        ("local2", 18),
        ("local3", 19),
        ("local4", 20),
        ("local5", 21),
        ("local6", 22),
        ("local7", 23),
    ];
    const SEVERITIES: &[(&str, u8)] = &[
        ("emerg", 0),
        ("alert", 1),
        ("crit", 2),
        ("err", 3),
        ("warning", 4),
        ("notice", 5),
        ("info", 6),
        ("debug", 7),
    ];
    let (facility, severity) = spec.split_once('.').unwrap_or((spec, "info"));
    let facility = if facility.is_empty() {
        "local4"
    } else {
        facility
    };
    let find = |table: &[(&str, u8)], name: &str| {
        table
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.strip_prefix("LOG_").unwrap_or(name)))
            .map(|(_, v)| *v)
    };
    let f = find(FACILITIES, facility)
        .ok_or_else(|| format!("'{facility}' is not a syslog facility (e.g. local4, daemon)"))?;
    let s = find(SEVERITIES, severity)
        .ok_or_else(|| format!("'{severity}' is not a syslog priority (e.g. info, notice)"))?;
    Ok(f * 8 + s)
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
    fn logformat_lines_and_the_built_in_names() {
        let c = parse_ok(
            "logformat squid %ts ignored\n\
             logformat mine  %>a  \"%rm %ru\" %{User-Agent}>h\n\
             logformat quoted \"%ts %tr\"\n\
             access_log /a.log squid\n\
             access_log /b.log combined\n\
             access_log /c.log logformat=mine\n\
             access_log /d.log quoted localhost\n",
        );
        let formats: Vec<_> = c.access_logs.iter().map(|l| l.format.clone()).collect();
        assert_eq!(formats[0], None, "squid stays the native format");
        assert_eq!(
            formats[1],
            crate::log_format::LogFormat::built_in("combined")
        );
        assert_eq!(
            formats[2],
            Some(crate::log_format::LogFormat::parse("%>a  \"%rm %ru\" %{User-Agent}>h").unwrap())
        );
        assert_eq!(
            formats[3],
            Some(crate::log_format::LogFormat::parse("%ts %tr").unwrap())
        );
        assert_eq!(c.access_logs[3].acls.0.len(), 1);
        assert!(c.notes[0].1.contains("logformat squid is already defined"));
    }

    #[test]
    fn syslog_priorities() {
        assert_eq!(super::syslog_priority(""), Ok(20 * 8 + 6));
        assert_eq!(super::syslog_priority("daemon.notice"), Ok(3 * 8 + 5));
        assert_eq!(super::syslog_priority("LOG_LOCAL0.LOG_ERR"), Ok(16 * 8 + 3));
        let c = parse_ok("access_log syslog:local5.info squid\naccess_log syslog\n");
        assert_eq!(c.access_logs[0].syslog, Some(21 * 8 + 6));
        assert_eq!(c.access_logs[1].syslog, Some(20 * 8 + 6));
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
                "access_log /x logformat=mine",
                "1:15: access_log: logformat 'mine' is not defined (define it with a \
                 logformat line before this one)",
            ),
            (
                "access_log /x replay=3",
                "1:15: access_log: unsupported option 'replay=3'",
            ),
            (
                "logformat mine",
                "1:15: logformat: missing format (e.g. %ts.%03tu %>a %rm %ru)",
            ),
            (
                "access_log tcp://loghost:514",
                "1:12: access_log: 'loghost:514' is not an address and port \
                 (tcp://ADDRESS:PORT, e.g. tcp://127.0.0.1:514)",
            ),
            (
                "access_log syslog:nowhere.info",
                "1:12: access_log: 'nowhere' is not a syslog facility (e.g. local4, daemon)",
            ),
            (
                "access_log udp://loghost:514",
                "1:12: access_log: 'loghost:514' is not an address and port \
                 (udp://ADDRESS:PORT, e.g. udp://127.0.0.1:514)",
            ),
            (
                "access_log stdio:",
                "1:12: access_log: 'stdio:' names no file",
            ),
            (
                "access_log /x fancy",
                "1:15: access_log: 'fancy' is neither a defined acl nor a log format (built \
                 in: squid, common, combined, referrer, useragent; or one a logformat line \
                 defines)",
            ),
            (
                "access_log /x localhost nosuch",
                "1:25: access_log: unknown acl 'nosuch' (acls must be defined before they are \
                 used)",
            ),
        ];
        assert_errors(&cases);
        let unknown = super::super::test_support::parse_err("logformat mine %ts %Xy");
        assert!(
            unknown.starts_with(
                "/etc/test.conf:1:16: logformat: character 5: format code '%Xy' is not one \
                 proxyfleet can log (supported: "
            ),
            "{unknown}"
        );
    }
}
