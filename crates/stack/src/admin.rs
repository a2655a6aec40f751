//! The `admin:` section (settings of the admin API) and the redaction of secrets from the
//! stack file's text before the admin API shows it.
//!
//! ```yaml
//! admin:
//!   read_requires_token: true   # default false: reads are open on the loopback address
//! ```
//!
//! Redaction works on the text as written, so the operator sees their own file (comments,
//! order, layout), with the value of every launch template's `environment` entry replaced
//! by `<redacted>`. The values are found by their source spans, where each is defined (for
//! an alias, at its anchor, so the alias reads the redacted value). The result is parsed
//! again and every environment value checked to be the placeholder; anything that cannot be
//! redacted for sure yields `None`, never the secret.

use std::fmt;

use serde::de::{Deserialize, Deserializer};
use serde_saphyr::Location;

use crate::raw::{self, RawStack};

/// What replaces every environment value in [`redact_environment`]'s output.
pub const REDACTED: &str = "<redacted>";

/// The admin API's settings from the stack file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admin {
    /// Whether reads (status, activity, history, events, metrics, stack) need the bearer
    /// token too; by default only mutating calls and `/api/stack` do.
    pub read_requires_token: bool,
}

/// `admin:` as written. Read through `within`, so that an unknown key is reported in the
/// object `admin` rather than in `stack`.
#[derive(Debug, Default)]
pub(crate) struct RawAdmin {
    pub read_requires_token: Option<bool>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    read_requires_token: Option<bool>,
}

impl<'de> Deserialize<'de> for RawAdmin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = raw::within(".admin".to_string(), || {
            Option::<Fields>::deserialize(deserializer)
        })?;
        Ok(RawAdmin {
            read_requires_token: fields.and_then(|f| f.read_requires_token),
        })
    }
}

impl fmt::Display for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read_requires_token: {}", self.read_requires_token)
    }
}

pub(crate) fn validate(raw: &RawStack) -> Admin {
    Admin {
        read_requires_token: raw.admin.read_requires_token.unwrap_or(false),
    }
}

/// `text` (a stack file) with every launch template's environment values replaced by
/// `<redacted>` (names kept), or `None` when that cannot be done for sure: the text does
/// not parse, a value's position is unknown, or the redacted text still holds a value.
pub fn redact_environment(text: &str) -> Option<String> {
    let raw = parse(text)?;
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (_, template) in &raw.launch_templates.0 {
        for (_, value) in template.environment.iter().flat_map(|e| &e.0) {
            // Only where the value is written: an alias (`*name`) then reads the redacted
            // anchor, and an alias of a whole mapping stays a mapping.
            if let Some(span) = byte_span(&value.defined, text)? {
                spans.push(span);
            }
        }
    }
    spans.sort_unstable();
    spans.dedup();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in spans {
        // Overlapping spans would mean we misread the file: refuse rather than guess.
        if start < copied {
            return None;
        }
        out.push_str(&text[copied..start]);
        // Unquoted: a valid plain scalar in block and flow context, and the whole content of
        // a `|` or `>` block scalar, whose header stays as written.
        out.push_str(REDACTED);
        copied = end;
    }
    out.push_str(&text[copied..]);
    let again = parse(&out)?;
    let clean = again
        .launch_templates
        .0
        .iter()
        .flat_map(|(_, t)| t.environment.iter().flat_map(|e| &e.0))
        // A block scalar keeps its line break (`|`), so compare without it.
        .all(|(_, v)| v.value.trim_end() == REDACTED || v.value.is_empty());
    clean.then_some(out)
}

fn parse(text: &str) -> Option<RawStack> {
    raw::reset_failure();
    serde_saphyr::from_str(text).ok()
}

/// The bytes `at` covers in `text` (`Some(None)`: none, an empty value, nothing to hide),
/// without trailing white space: a block scalar's span runs on to the indentation of the
/// next key, which must stay. `None` when the position is unknown.
fn byte_span(at: &Location, text: &str) -> Option<Option<(usize, usize)>> {
    let span = at.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let source = text.get(start..start.checked_add(len)?)?;
    let kept = source.trim_end();
    Some((!kept.is_empty()).then_some((start, start + kept.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value";

    fn check(text: &str) -> String {
        let out = redact_environment(text).unwrap_or_else(|| panic!("not redacted:\n{text}"));
        assert!(!out.contains(SECRET), "secret left in:\n{out}");
        assert!(!out.contains("other-secret"), "secret left in:\n{out}");
        out
    }

    #[test]
    fn plain_quoted_and_flow_values_are_replaced_in_place() {
        let text = "# my stack\n\
                    launch_templates:\n  \
                      t:\n    \
                        command: [proxyfleet, proxy]   # the proxy\n    \
                        environment:\n      \
                          DB_PASSWORD: s3cr3t-value\n      \
                          API_KEY: \"other-secret\"\n      \
                          SINGLE: 'other-secret'\n    \
                        files: { a.conf: keep-this }\n\
                    groups: {}\n";
        let out = check(text);
        assert_eq!(
            out,
            "# my stack\n\
             launch_templates:\n  \
               t:\n    \
                 command: [proxyfleet, proxy]   # the proxy\n    \
                 environment:\n      \
                   DB_PASSWORD: <redacted>\n      \
                   API_KEY: <redacted>\n      \
                   SINGLE: <redacted>\n    \
                 files: { a.conf: keep-this }\n\
             groups: {}\n"
        );
        let flow =
            "launch_templates: { t: { command: [x], environment: { A: s3cr3t-value, B: 1 } } }\n";
        assert_eq!(
            check(flow),
            "launch_templates: { t: { command: [x], environment: { A: <redacted>, B: <redacted> } } }\n"
        );
    }

    #[test]
    fn block_scalars_anchors_and_aliases_are_replaced() {
        let text = "launch_templates:\n  \
                      a:\n    \
                        command: [x]\n    \
                        environment:\n      \
                          KEY: |\n        \
                            s3cr3t-value\n        \
                            second line\n      \
                          FOLDED: >-\n        \
                            other-secret\n      \
                          SHARED: &shared other-secret\n  \
                      b:\n    \
                        command: [x]\n    \
                        environment:\n      \
                          AGAIN: *shared\n\
                    groups: {}\n";
        let out = check(text);
        assert!(!out.contains("second line"), "{out}");
        assert!(out.contains("groups: {}"), "{out}");
        assert!(out.contains("SHARED: &shared <redacted>\n"), "{out}");
        assert!(out.contains("AGAIN: *shared\n"), "{out}");
        assert!(
            out.contains("KEY: |\n        <redacted>\n      FOLDED: >-\n"),
            "{out}"
        );
    }

    #[test]
    fn a_whole_environment_by_alias_is_redacted_at_its_anchor() {
        let text = "launch_templates:\n  \
                      a:\n    \
                        command: [x]\n    \
                        environment: &env { A: s3cr3t-value }\n  \
                      b:\n    \
                        command: [x]\n    \
                        environment: *env\n";
        check(text);
    }

    #[test]
    fn text_without_environment_is_unchanged_and_garbage_is_refused() {
        assert_eq!(
            redact_environment("# nothing\nzones: {}\n").as_deref(),
            Some("# nothing\nzones: {}\n")
        );
        assert_eq!(
            redact_environment(crate::BUILTIN).as_deref(),
            Some(crate::BUILTIN)
        );
        assert_eq!(redact_environment("zones: [unclosed"), None);
        let empty = "launch_templates: { t: { command: [x], environment: { A: \"\", B: s3cr3t-value } } }\n";
        assert!(check(empty).contains("{ A: <redacted>, B: <redacted> }"));
        assert_eq!(redact_environment("nonsense_key: 1\n"), None);
    }
}
