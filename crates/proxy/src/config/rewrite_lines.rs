//! `url_rewrite_program` / `redirect_program`, `url_rewrite_children` /
//! `redirect_children`, `url_rewrite_access` / `redirect_access`, `url_rewrite_extras`,
//! `url_rewrite_bypass`, `url_rewrite_host_header` (the rewriting: [`crate::url_rewrite`]).

use super::auth_lines::helper_children;
use super::logging::rest_of_line;
use super::parse::{Directive, Parser};
use super::ConfigError;
use crate::helper::HelperSpec;
use crate::log_format::LogFormat;

/// Squid's defaults: 20 children, on demand.
pub(super) fn default_helper() -> HelperSpec {
    HelperSpec {
        role: "url_rewrite".into(),
        argv: Vec::new(),
        max_children: 20,
        startup: 0,
        concurrency: 0,
    }
}

impl Parser {
    pub(super) fn url_rewrite(&mut self, d: &Directive) -> Result<(), ConfigError> {
        match d.name.text.as_str() {
            "url_rewrite_program" | "redirect_program" => {
                d.arg(0, "helper program")?;
                self.url_rewrite_helper.argv = d.args.iter().map(|t| t.text.clone()).collect();
            }
            "url_rewrite_children" | "redirect_children" => {
                helper_children(d, d.args, &mut self.url_rewrite_helper)?
            }
            "url_rewrite_access" | "redirect_access" => {
                let rule = self.rule_after(d, 0)?;
                self.url_rewrite_access.push(rule);
            }
            "url_rewrite_extras" => {
                let first = d.arg(0, "format (e.g. \"%>a %un\")")?;
                let text = if d.args.len() == 1 && first.quoted {
                    first.text.clone()
                } else {
                    rest_of_line(d.args)
                };
                self.url_rewrite_extras =
                    Some(LogFormat::parse(&text).map_err(|why| d.error(first, why))?);
            }
            // Overload handling: requests wait for a free helper here, never skip it.
            "url_rewrite_bypass" | "redirector_bypass" => {
                super::tuning::on_off(d)?;
            }
            "url_rewrite_host_header" | "redirect_rewrites_host_header" => {
                self.url_rewrite_host_header = super::tuning::on_off(d)?;
            }
            name => unreachable!("not a url_rewrite directive: {name}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_errors, parse_ok};

    #[test]
    fn rewrite_lines() {
        let c = parse_ok(
            "redirect_program /usr/bin/squidGuard -c /etc/squidGuard.conf\n\
             url_rewrite_children 5 startup=1 idle=1 concurrency=3\n\
             acl skip dstdomain .internal.test\n\
             url_rewrite_access deny skip\n\
             url_rewrite_extras \"%>a %un\"\n\
             url_rewrite_bypass off\n",
        );
        let r = c.url_rewrite.expect("configured");
        assert_eq!(
            r.helper.argv,
            ["/usr/bin/squidGuard", "-c", "/etc/squidGuard.conf"]
        );
        assert_eq!(
            (
                r.helper.max_children,
                r.helper.startup,
                r.helper.concurrency
            ),
            (5, 1, 3)
        );
        assert_eq!(r.access.rules.len(), 1);
        assert_eq!(
            r.extras,
            crate::log_format::LogFormat::parse("%>a %un").unwrap()
        );
        assert!(
            parse_ok("url_rewrite_children 5").url_rewrite.is_none(),
            "no program"
        );
    }

    #[test]
    fn rewrite_errors() {
        assert_errors(&[
            (
                "url_rewrite_program",
                "1:20: url_rewrite_program: missing helper program",
            ),
            (
                "url_rewrite_children lots",
                "1:22: url_rewrite_children: 'lots' is not 1 to 1000",
            ),
        ]);
    }
}
