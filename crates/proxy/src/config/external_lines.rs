//! `external_acl_type NAME [ttl=N] [negative_ttl=N] [children-max=N] [children-startup=N]
//! [concurrency=N] [...] FORMAT... HELPER [ARGS...]` (the ACLs: [`crate::external_acl`]).

use std::time::Duration;

use super::parse::{Directive, Parser};
use super::ConfigError;
use crate::external_acl::{ExternalAclType, FormatToken};
use crate::helper::HelperSpec;

impl Parser {
    pub(super) fn external_acl_type(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name = d.arg(0, "external ACL type name")?;
        if self.external_types.iter().any(|t| t.name == name.text) {
            return Err(d.error(
                name,
                format!("external_acl_type '{}' is already defined", name.text),
            ));
        }
        let mut helper = HelperSpec {
            role: format!("external_acl_type {}", name.text),
            argv: Vec::new(),
            max_children: 20,
            startup: 0,
            concurrency: 0,
        };
        let mut ttl = Duration::from_secs(3600);
        let mut negative_ttl = None;
        let mut rest = &d.args[1..];
        // Options: words with `=`, and the address family flags.
        while let Some(t) = rest.first() {
            let (key, value) = match t.text.split_once('=') {
                Some(kv) => kv,
                None if matches!(t.text.as_str(), "ipv4" | "ipv6") => {
                    rest = &rest[1..];
                    continue;
                }
                None => break,
            };
            let number = || -> Result<u64, ConfigError> {
                value
                    .parse::<u64>()
                    .map_err(|_| d.error(t, format!("{key}: '{value}' is not a number")))
            };
            match key {
                "ttl" => ttl = Duration::from_secs(number()?),
                "negative_ttl" => negative_ttl = Some(Duration::from_secs(number()?)),
                "children-max" | "children" => {
                    helper.max_children = number()?.clamp(1, 1000) as usize
                }
                "children-startup" => helper.startup = number()? as usize,
                "concurrency" => helper.concurrency = number()? as usize,
                // The answers' own protocol version, spare children, queueing, the cache's
                // size and stale-while-refresh: nothing changes the answers here.
                "protocol" | "children-idle" | "queue-size" | "cache" | "grace" => {}
                "quote" if value == "url" => {}
                "quote" => return Err(d.error(t, "only quote=url (Squid's default) is supported")),
                _ => {
                    return Err(d.error(t, format!("unknown external_acl_type option '{}'", t.text)))
                }
            }
            rest = &rest[1..];
        }
        let mut format = Vec::new();
        while let Some(t) = rest.first().filter(|t| t.text.starts_with('%')) {
            format.push(FormatToken::parse(&t.text).map_err(|why| d.error(t, why))?);
            rest = &rest[1..];
        }
        if format.is_empty() {
            return Err(d.missing("format (e.g. %LOGIN) before the helper program"));
        }
        if rest.is_empty() {
            return Err(d.missing("helper program"));
        }
        helper.argv = rest.iter().map(|t| t.text.clone()).collect();
        helper.startup = helper.startup.min(helper.max_children);
        self.external_types.push(ExternalAclType::new(
            name.text.clone(),
            helper,
            format,
            ttl,
            negative_ttl.unwrap_or(ttl),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_errors, parse_ok};

    #[test]
    fn types_and_acls() {
        let c = parse_ok(
            "auth_param basic program /bin/true\n\
             external_acl_type groups ttl=60 negative_ttl=5 children-max=3 %LOGIN /usr/lib/squid/ext_file_userip_acl -f /etc/x\n\
             external_acl_type bysrc %SRC %>{X-Team} /bin/check\n\
             acl admins external groups admins\n\
             acl teams external bysrc\n\
             http_access allow admins\n",
        );
        let t = &c.external_acl_types;
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].helper.argv,
            ["/usr/lib/squid/ext_file_userip_acl", "-f", "/etc/x"]
        );
        assert_eq!(
            (
                t[0].ttl.as_secs(),
                t[0].negative_ttl.as_secs(),
                t[0].helper.max_children
            ),
            (60, 5, 3)
        );
        assert!(t[0].needs_login && !t[1].needs_login);
        assert!(
            c.http_access.needs_login(),
            "an external ACL with %LOGIN asks for credentials"
        );
    }

    #[test]
    fn errors() {
        assert_errors(&[
            (
                "external_acl_type g /bin/x",
                "1:27: external_acl_type: missing format (e.g. %LOGIN) before the helper program",
            ),
            (
                "external_acl_type g %SRC",
                "1:25: external_acl_type: missing helper program",
            ),
            (
                "external_acl_type g fancy=1 %SRC /bin/x",
                "1:21: external_acl_type: unknown external_acl_type option 'fancy=1'",
            ),
            (
                "acl a external nosuch",
                "1:16: acl 'a': no external_acl_type 'nosuch' is defined above",
            ),
            (
                "acl a external",
                "1:7: acl 'a': missing external_acl_type name",
            ),
        ]);
    }
}
