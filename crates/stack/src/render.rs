//! Placeholders in launch templates: `{id}`, `{zone}`, `{address}`, `{port}`, `{dir}`,
//! `{group}`; `{{` stands for a literal `{` (a `}` is always literal). Validation rejects
//! any other `{...}`, so rendering never fails.

use std::net::IpAddr;
use std::path::PathBuf;

/// The names a template may use, in the order messages list them.
pub const PLACEHOLDER_NAMES: [&str; 6] = ["id", "zone", "address", "port", "dir", "group"];

/// One instance's values for the placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholders {
    /// The instance's id (`{id}`).
    pub id: String,
    /// The zone it runs in (`{zone}`).
    pub zone: String,
    /// Its own address from the zone's subnet (`{address}`).
    pub address: IpAddr,
    /// The group's port (`{port}`).
    pub port: u16,
    /// Its directory, where the template's files are written (`{dir}`).
    pub dir: PathBuf,
    /// The group's name (`{group}`).
    pub group: String,
}

impl Placeholders {
    fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "id" => self.id.clone(),
            "zone" => self.zone.clone(),
            "address" => self.address.to_string(),
            "port" => self.port.to_string(),
            "dir" => self.dir.display().to_string(),
            "group" => self.group.clone(),
            _ => return None,
        })
    }
}

/// `text` with its placeholders replaced by `values`. Anything validation would have
/// rejected (an unknown name, an unclosed `{`) is copied as it is.
pub fn render(text: &str, values: &Placeholders) -> String {
    let mut out = String::with_capacity(text.len());
    for token in tokens(text) {
        match token {
            Token::Text(s) => out.push_str(s),
            Token::Placeholder { name, at } => match values.get(name) {
                Some(value) => out.push_str(&value),
                None => out.push_str(&text[at..at + name.len() + 2]),
            },
            Token::Unclosed { at } => out.push_str(&text[at..]),
        }
    }
    out
}

/// The first thing in `text` that is not a valid placeholder: its byte offset and what is
/// wrong with it.
pub(crate) fn first_problem(text: &str) -> Option<(usize, String)> {
    tokens(text).into_iter().find_map(|token| match token {
        Token::Placeholder { name, at } if !PLACEHOLDER_NAMES.contains(&name) => {
            let known: Vec<String> = PLACEHOLDER_NAMES
                .iter()
                .map(|n| format!("{{{n}}}"))
                .collect();
            Some((
                at,
                format!(
                    "unknown placeholder {{{name}}} (known: {}; write {{{{ for a literal {{)",
                    known.join(" ")
                ),
            ))
        }
        Token::Unclosed { at } => Some((
            at,
            "'{' without a closing '}' on the same line (write {{ for a literal {)".to_string(),
        )),
        _ => None,
    })
}

/// The placeholders `text` uses, in order, each once.
pub(crate) fn placeholders_in(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for token in tokens(text) {
        if let Token::Placeholder { name, .. } = token {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Text(&'a str),
    /// `{name}` starting at byte `at`.
    Placeholder {
        name: &'a str,
        at: usize,
    },
    /// A `{` at byte `at` with no `}` after it on its line; the rest of the text follows it.
    Unclosed {
        at: usize,
    },
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(open) = text[rest..].find('{').map(|i| rest + i) {
        if open > rest {
            out.push(Token::Text(&text[rest..open]));
        }
        if text[open + 1..].starts_with('{') {
            out.push(Token::Text("{"));
            rest = open + 2;
            continue;
        }
        let line_end = text[open..].find('\n').map_or(text.len(), |i| open + i);
        match text[open + 1..line_end].find('}') {
            Some(len) => {
                out.push(Token::Placeholder {
                    name: &text[open + 1..open + 1 + len],
                    at: open,
                });
                rest = open + len + 2;
            }
            None => {
                out.push(Token::Unclosed { at: open });
                return out;
            }
        }
    }
    if rest < text.len() {
        out.push(Token::Text(&text[rest..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Placeholders {
        Placeholders {
            id: "proxies-a-1".into(),
            zone: "a".into(),
            address: "127.10.1.11".parse().unwrap(),
            port: 3128,
            dir: "/var/lib/proxyfleet/proxies-a-1".into(),
            group: "proxies".into(),
        }
    }

    #[test]
    fn every_placeholder_is_replaced() {
        assert_eq!(
            render("{id} {zone} {address}:{port} {dir}/x {group}", &values()),
            "proxies-a-1 a 127.10.1.11:3128 /var/lib/proxyfleet/proxies-a-1/x proxies"
        );
    }

    #[test]
    fn double_brace_is_a_literal_brace_and_closing_braces_are_literal() {
        assert_eq!(render("${{HOME} {{id}} }", &values()), "${HOME} {id}} }");
        assert_eq!(render("{{{id}", &values()), "{proxies-a-1");
        assert_eq!(first_problem("${{HOME} {{id}} }"), None);
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let text = "http_access deny all\nacl app src 127.20.0.0/16\n";
        assert_eq!(render(text, &values()), text);
        assert_eq!(render("", &values()), "");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_found_and_copied() {
        let (at, message) = first_problem("a {id} b {nope} {zone}").unwrap();
        assert_eq!(at, 9);
        assert_eq!(
            message,
            "unknown placeholder {nope} (known: {id} {zone} {address} {port} {dir} {group}; \
             write {{ for a literal {)"
        );
        assert_eq!(render("a {nope} {id}", &values()), "a {nope} proxies-a-1");

        let (at, message) = first_problem("x {id\n}").unwrap();
        assert_eq!(at, 2);
        assert_eq!(
            message,
            "'{' without a closing '}' on the same line (write {{ for a literal {)"
        );
        assert_eq!(render("x {id\n} {id}", &values()), "x {id\n} {id}");
    }

    #[test]
    fn multibyte_text_around_placeholders() {
        assert_eq!(render("é{id}ü", &values()), "éproxies-a-1ü");
        assert_eq!(first_problem("é{x}").map(|(at, _)| at), Some(2));
    }
}
