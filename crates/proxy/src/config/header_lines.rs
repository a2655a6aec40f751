//! `request_header_access` / `reply_header_access NAME allow|deny [!]acl...`,
//! `request_header_replace` / `reply_header_replace NAME VALUE...`,
//! `request_header_add` / `reply_header_add NAME VALUE [[!]acl...]` and `http_reply_access`
//! (the rules themselves: [`crate::header_rules`]).

use std::collections::HashMap;

use super::logging::rest_of_line;
use super::parse::{Directive, Parser, PendingRef, PendingRule};
use super::ConfigError;
use crate::log_format::LogFormat;

/// One direction's header lines as read, ACL names not yet resolved.
#[derive(Default)]
pub(super) struct PendingHeaders {
    /// By lowercase name (`all` and `other` included), in file order within a name.
    pub access: HashMap<String, Vec<PendingRule>>,
    pub replace: HashMap<String, String>,
    pub add: Vec<(String, LogFormat, Vec<PendingRef>)>,
}

impl Parser {
    fn headers_of(&mut self, d: &Directive) -> &mut PendingHeaders {
        if d.name.text.starts_with("request_") {
            &mut self.request_headers
        } else {
            &mut self.reply_headers
        }
    }

    /// `*_header_access NAME allow|deny [!]acl...`.
    pub(super) fn header_access(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name = d.arg(0, "header name (or All, Other)")?;
        let rule = self.rule_after(d, 1)?;
        let key = name.text.to_ascii_lowercase();
        self.headers_of(d).access.entry(key).or_default().push(rule);
        Ok(())
    }

    /// `*_header_replace NAME VALUE...`: the value is the rest of the line.
    pub(super) fn header_replace(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name = d.arg(0, "header name")?;
        d.arg(1, "replacement value")?;
        let value = rest_of_line(&d.args[1..]);
        let key = name.text.to_ascii_lowercase();
        self.headers_of(d).replace.insert(key, value);
        Ok(())
    }

    /// `*_header_add NAME "VALUE" [[!]acl...]`: the value may use `logformat` codes.
    pub(super) fn header_add(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name = d.arg(0, "header name")?;
        if name.quoted || !is_field_name(&name.text) {
            return Err(d.error(name, format!("'{}' is not a header field name", name.raw())));
        }
        let value = d.arg(1, "value (in double quotes)")?;
        let format = LogFormat::parse(&value.text).map_err(|why| d.error(value, why))?;
        let refs = self.acl_refs(d, &d.args[2..])?;
        let name = name.text.clone();
        self.headers_of(d).add.push((name, format, refs));
        Ok(())
    }
}

/// RFC 9110 §5.1: a token.
fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_errors, parse_ok, Request};
    use crate::http::rewrite::FieldAction;

    #[test]
    fn access_rules_by_name_then_other_then_all() {
        let c = parse_ok(
            "acl lan src 10.0.0.0/8\n\
             request_header_access User-Agent allow lan\n\
             request_header_access User-Agent deny all\n\
             request_header_access Cookie allow all\n\
             request_header_access Other deny all\n\
             request_header_access All deny lan\n\
             request_header_replace User-Agent Mozilla/5.0 (compatible; proxy)\n\
             request_header_add X-Client \"%>a\" lan\n\
             reply_header_access Server deny all\n",
        );
        let rules = &c.request_headers;
        let lan = Request::get("10.1.2.3", "h", 80);
        let wan = Request::get("192.0.2.1", "h", 80);
        let act = |r: &Request, name: &str| rules.action(name.as_bytes(), &r.facts());
        assert_eq!(act(&lan, "user-agent"), FieldAction::Keep);
        assert_eq!(
            act(&wan, "User-Agent"),
            FieldAction::Replace("Mozilla/5.0 (compatible; proxy)")
        );
        assert_eq!(act(&wan, "Cookie"), FieldAction::Keep);
        assert_eq!(act(&wan, "X-Custom"), FieldAction::Drop, "Other");
        // A name Squid knows falls to All: denied for lan, and for the rest the opposite
        // of the last (deny) line.
        assert_eq!(act(&lan, "Accept"), FieldAction::Drop);
        assert_eq!(act(&wan, "Accept"), FieldAction::Keep);
        assert_eq!(rules.add.len(), 1);
        assert_eq!(
            c.reply_headers.action(b"server", &wan.facts()),
            FieldAction::Drop
        );
        assert!(c.reply_headers.add.is_empty());
    }

    #[test]
    fn header_line_errors() {
        let cases = [
            (
                "request_header_access Via",
                "1:26: request_header_access: missing 'allow' or 'deny'",
            ),
            (
                "request_header_access Via maybe all",
                "1:27: request_header_access: expected 'allow' or 'deny', found 'maybe'",
            ),
            (
                "request_header_access Via deny",
                "1:31: request_header_access: missing acl name after 'deny' (use 'all' to \
                 match everything)",
            ),
            (
                "reply_header_access Via deny nosuch",
                "1:30: reply_header_access: unknown acl 'nosuch' (acls must be defined before \
                 they are used)",
            ),
            (
                "request_header_replace User-Agent",
                "1:34: request_header_replace: missing replacement value",
            ),
            (
                "request_header_add X:Y \"v\"",
                "1:20: request_header_add: 'X:Y' is not a header field name",
            ),
            (
                "reply_header_add X-A \"%{x\"",
                "1:22: reply_header_add: character 1: a '{' without its '}'",
            ),
        ];
        assert_errors(&cases);
    }
}
