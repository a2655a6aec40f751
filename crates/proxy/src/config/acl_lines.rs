//! `acl` lines (values inline or from `"/path"` files) and the `http_access` /
//! `proxy_protocol_access` rules that reference ACLs by name.

use super::files::Files;
use super::lex::Token;
use super::model::Location;
use super::parse::{AclSlot, Directive, Parser, PendingRef, PendingRule};
use super::read::MAX_CONFIG_LINE_BYTES;
use super::ConfigError;
use crate::acl::{AclBuilder, AclType};

/// Squid's limit on ACL names (`ACL_NAME_SZ` minus the terminator).
const MAX_ACL_NAME: usize = 63;

impl Parser {
    /// `acl NAME TYPE [-i|+i|-n|--] VALUE...`, values possibly from `"/path"` files.
    pub(super) fn acl(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name_tok = d.arg(0, "acl name")?;
        let name = name_tok.text.as_str();
        if name_tok.quoted || name.len() > MAX_ACL_NAME {
            return Err(d.error(
                name_tok,
                format!(
                    "invalid acl name {} (at most {MAX_ACL_NAME} characters, unquoted)",
                    name_tok.raw()
                ),
            ));
        }
        let supported = || {
            AclType::USABLE
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let type_tok = d.arg(
            1,
            &format!("type of acl '{name}' (supported: {})", supported()),
        )?;
        if name == "manager" && (type_tok.is("proto") || type_tok.is("url_regex")) {
            // The pre-3.2 `acl manager proto cache_object` (or Squid 5's own definition
            // copied): Squid 5 says "UPGRADE: ACL 'manager' is now a built-in ACL" and
            // ignores the line; so do we.
            self.ignored.push(("acl manager".to_owned(), d.location()));
            return Ok(());
        }
        let ty = AclType::from_name(&type_tok.text)
            .filter(|_| !type_tok.quoted)
            .ok_or_else(|| {
                d.error_plain(
                    type_tok,
                    format!(
                        "acl '{name}': unknown acl type '{}' (supported: {})",
                        type_tok.raw(),
                        supported()
                    ),
                )
            })?;
        if ty.needs_login()
            && self.basic_auth.helper.argv.is_empty()
            && self.digest_auth.helper.argv.is_empty()
        {
            // Squid 5: "Can't use proxy auth because no authentication schemes are fully
            // configured", fatal at this line.
            return Err(d.error_plain(
                name_tok,
                format!(
                    "acl '{name}' of type {} needs an 'auth_param basic program' line before it",
                    ty.name()
                ),
            ));
        }
        let files = &self.files;
        let slot = self.acls.entry(name.to_owned()).or_insert_with(|| AclSlot {
            builder: AclBuilder::new(name, ty),
            defined_at: Some(d.location_of(name_tok)),
        });
        if slot.builder.ty() == AclType::Protected {
            return Err(d.error_plain(
                name_tok,
                "acl 'to_protected' is built in (the destination guard): add addresses to it \
                 with destination_guard_deny, exempt them with destination_guard_allow",
            ));
        }
        if slot.builder.ty() != ty {
            let existing = slot.builder.ty().name();
            let what = match &slot.defined_at {
                Some(at) => {
                    format!("acl '{name}' is already defined with type '{existing}' at {at}")
                }
                None => format!("acl '{name}' is a built-in acl of type '{existing}'"),
            };
            return Err(d.error_plain(
                type_tok,
                format!("{what}; it cannot also be of type '{}'", ty.name()),
            ));
        }

        let mut values = &d.args[2..];
        let mut icase = false;
        while let Some(t) = values.first() {
            let is_flag = !t.quoted
                && t.text.len() > 1
                && (t.text.starts_with('-') || t.text.starts_with('+'));
            if !is_flag {
                break;
            }
            values = &values[1..];
            if t.text == "--" {
                break;
            }
            if !ty.accepts_flag(&t.text) {
                return Err(d.error_plain(
                    t,
                    format!(
                        "acl '{name}': option '{}' is not supported for acl type '{}'",
                        t.text,
                        ty.name()
                    ),
                ));
            }
            icase = match t.text.as_str() {
                "-i" => true,
                "+i" => false,
                _ => icase,
            };
        }
        if ty == AclType::External {
            // The type must be defined above; the values after it are the ACL's arguments.
            let class = values.first().ok_or_else(|| {
                d.error_plain(
                    type_tok,
                    format!("acl '{name}': missing external_acl_type name"),
                )
            })?;
            if let Some(t) = self.external_types.iter().find(|t| t.name == class.text) {
                if slot.builder.set_external_class(&t.name, t.needs_login) {
                    values = &values[1..];
                }
            } else {
                return Err(d.error_plain(
                    class,
                    format!(
                        "acl '{name}': no external_acl_type '{}' is defined above",
                        class.text
                    ),
                ));
            }
        }
        let mut missing_files = Vec::new();
        for t in values {
            if t.quoted {
                if let Some(note) = add_file_values(d, files, t, &mut slot.builder, &mut icase)? {
                    missing_files.push((d.location_of(t), note));
                }
            } else {
                add_value(&mut slot.builder, &t.text, &mut icase)
                    .map_err(|m| d.error_plain(t, format!("acl '{name}': {m}")))?;
            }
        }
        self.notes.extend(missing_files);
        if values.is_empty() && slot.defined_at.as_ref() == Some(&d.location_of(name_tok)) {
            // Squid only warns ("empty ACL"); such an ACL matches nothing.
            tracing::warn!(
                location = %d.location(),
                acl = name,
                "acl without values matches nothing"
            );
        }
        Ok(())
    }

    /// `http_access` / `proxy_protocol_access allow|deny [!]acl...`.
    pub(super) fn access_rule(
        &mut self,
        d: &Directive,
        proxy_protocol: bool,
    ) -> Result<(), ConfigError> {
        let rule = self.rule_after(d, 0)?;
        if proxy_protocol {
            self.proxy_protocol_access.push(rule);
        } else {
            self.http_access.push(rule);
        }
        Ok(())
    }

    /// The `allow|deny [!]acl...` rule after the first `skip` arguments of a line (a pool
    /// number, a peer or header name).
    pub(super) fn rule_after(
        &self,
        d: &Directive,
        skip: usize,
    ) -> Result<PendingRule, ConfigError> {
        let rest = Directive {
            file: d.file,
            name: d.name,
            args: &d.args[skip.min(d.args.len())..],
            end: d.end,
        };
        let d = &rest;
        let action = d.arg(0, "'allow' or 'deny'")?;
        let allow = match action.text.as_str() {
            "allow" => true,
            "deny" => false,
            _ => {
                return Err(d.error(
                    action,
                    format!("expected 'allow' or 'deny', found '{}'", action.text),
                ))
            }
        };
        if d.args.len() < 2 {
            // Squid skips such a line with a warning; a rule that silently does nothing is
            // more likely a mistake than intended.
            return Err(d.missing(&format!(
                "acl name after '{}' (use 'all' to match everything)",
                action.text
            )));
        }
        let refs = self.acl_refs(d, &d.args[1..])?;
        Ok(PendingRule {
            allow,
            refs,
            location: d.location(),
        })
    }

    /// `http_reply_access`, `miss_access`, `never_direct`, `always_direct`: `allow|deny
    /// [!]acl...` lines.
    pub(super) fn other_access_rule(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let rule = self.rule_after(d, 0)?;
        match d.name.text.as_str() {
            "http_reply_access" => self.http_reply_access.push(rule),
            "miss_access" => self.miss_access.push(rule),
            "never_direct" => self.never_direct.push(rule),
            _ => self.always_direct.push(rule),
        }
        Ok(())
    }

    /// `[!]name...`: every name must already be defined.
    pub(super) fn acl_refs(
        &self,
        d: &Directive,
        tokens: &[Token],
    ) -> Result<Vec<PendingRef>, ConfigError> {
        tokens
            .iter()
            .map(|t| {
                let (negate, name) = match t.text.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, t.text.as_str()),
                };
                if name.is_empty() {
                    return Err(d.error(t, "missing acl name after '!'"));
                }
                if !self.acls.contains_key(name) {
                    return Err(d.error(
                        t,
                        format!("unknown acl '{name}' (acls must be defined before they are used)"),
                    ));
                }
                Ok(PendingRef {
                    negate,
                    name: name.to_owned(),
                })
            })
            .collect()
    }
}

/// One ACL value; `-i` / `+i` between regex values switch case sensitivity for the
/// following ones, as in Squid.
fn add_value(builder: &mut AclBuilder, value: &str, icase: &mut bool) -> Result<(), String> {
    if builder.ty().is_regex() && (value == "-i" || value == "+i") {
        *icase = value == "-i";
        return Ok(());
    }
    builder.add(value, *icase)
}

/// `"/path"`: Squid reads the first word of each line as one value, skipping blank lines
/// and lines starting with `#`. Relative paths are relative to the configuration file.
/// A line may be at most [`MAX_CONFIG_LINE_BYTES`], like a squid.conf line: no real value (a
/// domain, an address, a pattern) is longer, and a regex of megabytes would cost its
/// compilation dearly.
fn add_file_values(
    d: &Directive,
    files: &Files,
    t: &Token,
    builder: &mut AclBuilder,
    icase: &mut bool,
) -> Result<Option<String>, ConfigError> {
    if t.unterminated {
        return Err(d.error_plain(
            t,
            format!(
                "acl '{}': missing closing quote in {}",
                builder.name(),
                t.raw()
            ),
        ));
    }
    let path = files
        .resolve(d.base_dir(), &t.text, false)
        .map_err(|m| d.error_plain(t, format!("acl '{}': {m}", builder.name())))?;
    let text = match files.read(&path) {
        // Squid reports a value file that does not exist and goes on without its values;
        // so does proxyfleet, saying so at start-up (anything else wrong with it is an error).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(format!(
                "acl '{}': value file '{}' does not exist: the acl has none of its values",
                builder.name(),
                path.display()
            )))
        }
        other => other,
    };
    let text = text.map_err(|e| {
        d.error_plain(
            t,
            format!(
                "acl '{}': cannot read value file '{}': {e}",
                builder.name(),
                path.display()
            ),
        )
    })?;
    for (index, line) in text.lines().enumerate() {
        if line.len() > MAX_CONFIG_LINE_BYTES {
            let location = Location {
                file: path.clone(),
                line: index + 1,
                column: 1,
            };
            return Err(ConfigError::new(
                location,
                format!(
                    "acl '{}': line longer than the {} limit",
                    builder.name(),
                    super::read::describe(MAX_CONFIG_LINE_BYTES as u64)
                ),
            ));
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        let Some(value) = trimmed.split([' ', '\t', '\r']).next() else {
            continue;
        };
        if value.is_empty() || value.starts_with('#') {
            continue;
        }
        add_value(builder, value, icase).map_err(|m| {
            let location = Location {
                file: path.clone(),
                line: index + 1,
                column: line.chars().count() - trimmed.chars().count() + 1,
            };
            ConfigError::new(location, format!("acl '{}': {m}", builder.name()))
        })?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::super::parse_str;
    use super::super::test_support::{assert_errors, parse_ok, Request, TempDir};

    #[test]
    fn a_value_file_line_longer_than_64_kib_is_refused_at_its_line() {
        let dir = TempDir::new("acl-long-line");
        let long = "a".repeat(64 * 1024 + 1);
        let values = dir.write("domains.txt", &format!("example.com\n{long}.example\n"));
        let e = parse_str(
            &format!("acl d dstdomain \"{}\"\nhttp_port 3128\n", values.display()),
            &dir.0.join("squid.conf"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2:1: acl 'd': line longer than the 64 KiB limit",
                values.display()
            )
        );
        // At the limit it is read.
        let at = "a".repeat(64 * 1024 - 8);
        dir.write("domains.txt", &format!("{at}.example\n"));
        parse_str(
            &format!("acl d dstdomain \"{}\"\nhttp_port 3128\n", values.display()),
            &dir.0.join("squid.conf"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn acl_lines_add_up_even_after_a_reference() {
        let c = parse_ok(
            "acl lan src 10.0.0.0/8\n\
             acl lan src 192.168.0.0/16\n\
             http_access allow lan\n\
             acl lan src 172.16.0.0/12\n",
        );
        for (client, allowed) in [
            ("10.1.2.3", true),
            ("192.168.7.7", true),
            ("172.16.0.1", true),
            ("8.8.8.8", false),
        ] {
            let r = Request::get(client, "example.com", 80);
            assert_eq!(c.http_access.allows(&r.facts()), allowed, "{client}");
        }
    }

    #[test]
    fn builtin_acls_take_values_of_their_own_type() {
        let c =
            parse_ok("acl localhost src 10.9.9.9\nacl all src all\nhttp_access allow localhost");
        let r = Request::get("10.9.9.9", "example.com", 80);
        assert!(c.http_access.allows(&r.facts()));
        let r = Request::get("127.0.0.1", "example.com", 80);
        assert!(c.http_access.allows(&r.facts()));
    }

    #[test]
    fn destination_guard_directives() {
        let c = parse_ok(
            "destination_guard on\ndestination_guard_allow 127.30.0.0/16 127.0.0.53\n\
             destination_guard_deny 10.9.0.0/16\nhttp_access deny to_protected\nhttp_access allow all",
        );
        let guard = &c.destination_guard;
        assert!(guard.enabled);
        assert_eq!(c.destination_guard_in_files, Some(true));
        assert_eq!(guard.allowed().len(), 2);
        assert_eq!(guard.denied().len(), 1);
        let mut r = Request::get("10.0.0.1", "h.test", 80);
        for (dst, allowed) in [
            ("127.30.0.10", true),
            ("127.0.0.53", true),
            ("127.0.0.1", false),
            ("10.9.1.1", false),
            ("10.8.1.1", true),
            ("169.254.169.254", false),
        ] {
            r.dst_ips = vec![dst.parse().unwrap()];
            assert_eq!(c.http_access.allows(&r.facts()), allowed, "{dst}");
        }
        let c = parse_ok("http_access allow all");
        assert_eq!(c.destination_guard_in_files, None);
    }

    #[test]
    fn legacy_manager_line_is_ignored_like_squid() {
        let c = parse_ok("acl manager proto cache_object\nhttp_access allow manager");
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(c.ignored[0].0, "acl manager");
        assert_eq!(c.ignored[0].1.line, 1);
    }

    #[test]
    fn acl_errors() {
        let cases = [
            ("acl", "1:4: acl: missing acl name"),
            (
                "acl x",
                "1:6: acl: missing type of acl 'x' (supported: src, dst, dstdomain, \
                 dstdom_regex, port, method, proto, url_regex, urlpath_regex, proxy_auth, \
                 proxy_auth_regex, browser, referer_regex, req_header, rep_header, \
                 rep_mime_type, http_status, myport, myportname, localip, has, time, external, \
                 at_step, ssl::server_name, ssl::server_name_regex, maxconn)",
            ),
            (
                "acl x arp 00:11:22:33:44:55",
                "1:7: acl 'x': unknown acl type 'arp' (supported: src, dst, dstdomain, \
                 dstdom_regex, port, method, proto, url_regex, urlpath_regex, proxy_auth, \
                 proxy_auth_regex, browser, referer_regex, req_header, rep_header, \
                 rep_mime_type, http_status, myport, myportname, localip, has, time, external, \
                 at_step, ssl::server_name, ssl::server_name_regex, maxconn)",
            ),
            (
                "acl lan src 10.0.0.0/8\nacl  lan dst 10.0.0.1",
                "2:10: acl 'lan' is already defined with type 'src' at /etc/test.conf:1:5; \
                 it cannot also be of type 'dst'",
            ),
            (
                "acl all dst 10.0.0.1",
                "1:9: acl 'all' is a built-in acl of type 'src'; it cannot also be of type 'dst'",
            ),
            (
                "acl to_protected dst 10.0.0.1",
                "1:5: acl 'to_protected' is built in (the destination guard): add addresses to \
                 it with destination_guard_deny, exempt them with destination_guard_allow",
            ),
            (
                "destination_guard maybe",
                "1:19: destination_guard: expected 'on' or 'off', found 'maybe'",
            ),
            (
                "destination_guard_allow 10.0.0.0/8 10.1",
                "1:36: destination_guard_allow: '10.1' is not an IP address or CIDR",
            ),
            (
                "acl manager src 10.0.0.1",
                "1:13: acl 'manager' is a built-in acl of type 'url_regex'; it cannot also be \
                 of type 'src'",
            ),
            (
                "acl x src 10.0.0.1 10.0.0.300",
                "1:20: acl 'x': '10.0.0.300' is not an IP address, network (ADDR/LEN) or range \
                 (ADDR-ADDR)",
            ),
            (
                "acl d dstdomain -i .example.com",
                "1:17: acl 'd': option '-i' is not supported for acl type 'dstdomain'",
            ),
            (
                "acl p port -n 80",
                "1:12: acl 'p': option '-n' is not supported for acl type 'port'",
            ),
            (
                "acl r dstdom_regex (unclosed",
                "1:20: acl 'r': '(unclosed' is not a valid regular expression: unclosed group",
            ),
            (
                "acl p port 80 \\\n   99999",
                "2:4: acl 'p': '99999': port numbers go up to 65535",
            ),
            (
                &format!("acl {} src all", "n".repeat(64)),
                &format!(
                    "1:5: acl: invalid acl name {} (at most 63 characters, unquoted)",
                    "n".repeat(64)
                ),
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn acl_flags_and_regex_case() {
        let c = parse_ok(
            "acl d dstdomain -n .example.com\n\
             acl p port -- 80\n\
             acl r dstdom_regex -i ^WWW\\. +i \\.Org$\n\
             http_access allow d p\n\
             http_access allow r\n",
        );
        let allowed = |host: &'static str, port| {
            let r = Request::get("192.0.2.1", host, port);
            c.http_access.allows(&r.facts())
        };
        assert!(allowed("www.example.com", 80));
        assert!(allowed("example.com", 80));
        assert!(!allowed("example.com", 81));
        assert!(allowed("www.other.net", 81), "-i applies to ^WWW");
        assert!(allowed("example.Org", 81));
        assert!(
            !allowed("example.org", 81),
            "+i switched case sensitivity back on"
        );
    }

    #[test]
    fn acl_values_from_a_quoted_file() {
        let dir = TempDir::new("aclfile");
        dir.write(
            "lan.txt",
            "# offices\n10.0.0.0/8 trailing words are ignored\n\n  192.168.1.0/24\n",
        );
        let conf = dir.write(
            "squid.conf",
            "acl lan src \"lan.txt\" 172.16.0.1\nhttp_access allow lan\nhttp_port 3128\n",
        );
        let c = super::super::parse_file(&conf).unwrap();
        for (client, allowed) in [
            ("10.4.4.4", true),
            ("192.168.1.9", true),
            ("172.16.0.1", true),
            ("192.168.2.1", false),
        ] {
            let r = Request::get(client, "example.com", 80);
            assert_eq!(c.http_access.allows(&r.facts()), allowed, "{client}");
        }

        dir.write("bad.txt", "10.0.0.1\n\t bogus\n");
        let text = "acl lan src \"bad.txt\"\nhttp_port 3128\n";
        let e = parse_str(text, &conf).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2:3: acl 'lan': 'bogus' is not an IP address, network (ADDR/LEN) or range \
                 (ADDR-ADDR)",
                dir.0.join("bad.txt").display()
            )
        );

        // As in Squid, a value file that does not exist is reported and the ACL goes on
        // without its values.
        let text = "acl lan src 10.0.0.1 \"missing.txt\"\nhttp_port 3128\n";
        let c = parse_str(text, &conf).unwrap();
        assert_eq!(c.notes.len(), 1);
        assert_eq!(c.notes[0].0.column, 22);
        assert_eq!(
            c.notes[0].1,
            format!(
                "acl 'lan': value file '{}' does not exist: the acl has none of its values",
                dir.0.join("missing.txt").display()
            )
        );

        let e = parse_str("acl lan src \"lan.txt\nhttp_port 3128\n", &conf).unwrap_err();
        assert_eq!(e.location().column, 13);
        assert_eq!(e.message(), "acl 'lan': missing closing quote in \"lan.txt");
    }

    #[test]
    fn access_rule_errors() {
        let cases = [
            (
                "http_access",
                "1:12: http_access: missing 'allow' or 'deny'",
            ),
            (
                "http_access permit all",
                "1:13: http_access: expected 'allow' or 'deny', found 'permit'",
            ),
            (
                "http_access allow",
                "1:18: http_access: missing acl name after 'allow' (use 'all' to match \
                 everything)",
            ),
            (
                "http_access allow lan",
                "1:19: http_access: unknown acl 'lan' (acls must be defined before they are \
                 used)",
            ),
            (
                "http_access deny all !",
                "1:22: http_access: missing acl name after '!'",
            ),
            (
                "proxy_protocol_access allow !lbs",
                "1:29: proxy_protocol_access: unknown acl 'lbs' (acls must be defined before \
                 they are used)",
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn access_rules_keep_order_and_locations() {
        let c = parse_ok(
            "acl bad src 10.0.0.66\n\
             acl lbs src 10.1.0.0/16\n\
             http_access deny bad\n\
             proxy_protocol_access allow lbs\n",
        );
        let r = Request::get("10.0.0.66", "example.com", 80);
        let (allowed, rule) = c.http_access.decide(&r.facts());
        assert!(!allowed);
        assert_eq!(rule.unwrap().location.line, 3);
        // Opposite of the last line.
        let r = Request::get("10.0.0.1", "example.com", 80);
        assert!(c.http_access.decide(&r.facts()).0);
        assert_eq!(c.http_access.rules.len(), 1);
        assert_eq!(c.proxy_protocol_access.rules.len(), 1);
        let lb = Request::get("10.1.2.3", "", 0);
        assert!(c.proxy_protocol_access.allows(&lb.facts()));
        assert!(!c.http_access.needs_dst_ips());
    }
}
