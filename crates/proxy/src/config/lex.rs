//! Splitting squid.conf text into directive lines and tokens, the way Squid 5 does.
//!
//! - One directive per line; blank lines and lines whose first non-blank character is `#`
//!   are comments.
//! - A line whose very last character is `\` continues on the next line. Like Squid, the
//!   continuation's leading blanks are dropped and the two parts are glued with nothing in
//!   between (so `a\` + `b` is `ab`); blank and comment lines in the middle are skipped.
//! - Tokens are separated by spaces and tabs; a token that *starts* with `#` begins a trailing
//!   comment (`acl Safe_ports port 80  # http`), while `#` inside a token is kept (`x#y`).
//! - A token starting with `"` runs to the next `"` (blanks included): Squid's
//!   `"/path/file"` syntax for reading ACL values from a file.
//!
//! Every token keeps the line and column (1-based, in characters) where it starts, even
//! across continuations, so errors can point at it.

/// One token of a directive line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text, without the quotes for a quoted token.
    pub text: String,
    pub line: usize,
    pub column: usize,
    /// Written as `"..."`.
    pub quoted: bool,
    /// A `"` with no closing quote before the end of the line.
    pub unterminated: bool,
}

impl Token {
    /// The token as written, for messages.
    pub fn raw(&self) -> String {
        match (self.quoted, self.unterminated) {
            (true, false) => format!("\"{}\"", self.text),
            (true, true) => format!("\"{}", self.text),
            _ => self.text.clone(),
        }
    }

    /// Whether this is the plain (unquoted) word `word`.
    pub fn is(&self, word: &str) -> bool {
        !self.quoted && self.text == word
    }
}

/// One directive: its name and arguments, with where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Never empty: comment-only lines produce no `Line`.
    pub tokens: Vec<Token>,
    /// Line and column just past the last token, where a missing argument would go.
    pub end: (usize, usize),
}

/// A character with the position it came from.
type Placed = (char, usize, usize);

pub fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<Vec<Placed>> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // Continuations drop their leading blanks; a first line keeps them (they only
        // shift columns).
        let (start_col, part) = match pending {
            Some(_) => (raw.chars().count() - trimmed.chars().count() + 1, trimmed),
            None => (1, raw),
        };
        let buffer = pending.get_or_insert_with(Vec::new);
        buffer.extend(
            part.chars()
                .enumerate()
                .map(|(i, c)| (c, number, start_col + i)),
        );
        if buffer.last().is_some_and(|&(c, _, _)| c == '\\') {
            buffer.pop();
            continue;
        }
        let chars = pending.take().unwrap_or_default();
        if let Some(line) = tokenize(&chars) {
            out.push(line);
        }
    }
    if let Some(chars) = pending {
        // A file ending in `\`: the directive simply ends there.
        if let Some(line) = tokenize(&chars) {
            out.push(line);
        }
    }
    out
}

/// The first logical line (continuations included) longer than `cap` bytes, as the line and
/// column where it starts. Checked before [`lines`], which records a position for every
/// character and would otherwise spend 24 bytes per byte of a huge line.
pub fn overlong_line(text: &str, cap: usize) -> Option<(usize, usize)> {
    // (line, column, bytes so far) of the logical line being continued.
    let mut pending: Option<(usize, usize, usize)> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (line, column, before) = pending.unwrap_or_else(|| {
            let column = raw[..raw.len() - trimmed.len()].chars().count() + 1;
            (index + 1, column, 0)
        });
        let total = before + trimmed.len();
        if total > cap {
            return Some((line, column));
        }
        pending = trimmed.ends_with('\\').then_some((line, column, total));
    }
    None
}

fn tokenize(chars: &[Placed]) -> Option<Line> {
    let is_blank = |c: char| c == ' ' || c == '\t' || c == '\r';
    let mut tokens = Vec::new();
    let mut end = (0, 0);
    let mut i = 0;
    while i < chars.len() {
        let (c, line, column) = chars[i];
        if is_blank(c) {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let mut token = Token {
            text: String::new(),
            line,
            column,
            quoted: c == '"',
            unterminated: false,
        };
        if token.quoted {
            i += 1;
            while i < chars.len() && chars[i].0 != '"' {
                token.text.push(chars[i].0);
                i += 1;
            }
            if i < chars.len() {
                end = (chars[i].1, chars[i].2 + 1);
                i += 1;
            } else {
                token.unterminated = true;
                let last = chars[chars.len() - 1];
                end = (last.1, last.2 + 1);
            }
        } else {
            while i < chars.len() && !is_blank(chars[i].0) {
                token.text.push(chars[i].0);
                end = (chars[i].1, chars[i].2 + 1);
                i += 1;
            }
        }
        tokens.push(token);
    }
    (!tokens.is_empty()).then_some(Line { tokens, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Vec<String>> {
        lines(text)
            .into_iter()
            .map(|l| l.tokens.into_iter().map(|t| t.raw()).collect())
            .collect()
    }

    fn place(t: &Token) -> (usize, usize) {
        (t.line, t.column)
    }

    #[test]
    fn comments_blank_lines_and_trailing_comments() {
        let text = "# a comment\n\n   \t# indented comment\nacl Safe_ports port 80\t\t# http\nacl x#y src 10.0.0.1 #\n";
        assert_eq!(
            words(text),
            [
                vec!["acl", "Safe_ports", "port", "80"],
                vec!["acl", "x#y", "src", "10.0.0.1"],
            ]
        );
    }

    #[test]
    fn positions_are_one_based_characters() {
        let ls = lines("\n  http_port\t127.0.0.1:3128  require-proxy-header\n");
        let t = &ls[0].tokens;
        assert_eq!(place(&t[0]), (2, 3));
        assert_eq!(place(&t[1]), (2, 13));
        assert_eq!(place(&t[2]), (2, 29));
        assert_eq!(ls[0].end, (2, 49));
    }

    #[test]
    fn continuation_lines_glue_like_squid() {
        let text = "acl x src 10.0.0.1 \\\n\n# comment inside\n    10.0.0.2 \\\n10.0.0.3\nhttp_po\\\nrt 3128\r\n";
        let ls = lines(text);
        assert_eq!(
            words(text),
            [
                vec!["acl", "x", "src", "10.0.0.1", "10.0.0.2", "10.0.0.3"],
                vec!["http_port", "3128"],
            ]
        );
        // Tokens keep their physical positions.
        assert_eq!(place(&ls[0].tokens[4]), (4, 5));
        assert_eq!(place(&ls[0].tokens[5]), (5, 1));
        assert_eq!(place(&ls[1].tokens[1]), (7, 4));
    }

    #[test]
    fn backslash_followed_by_blank_is_not_a_continuation() {
        assert_eq!(
            words("via on \\ \nvia off"),
            [vec!["via", "on", "\\"], vec!["via", "off"]]
        );
    }

    #[test]
    fn file_may_end_inside_a_continuation() {
        assert_eq!(words("via on \\"), [vec!["via", "on"]]);
    }

    #[test]
    fn quoted_tokens() {
        let ls = lines("acl x src \"/etc/squid/my list\" 10.0.0.1 \"/open");
        let t = &ls[0].tokens;
        assert!(t[3].quoted && !t[3].unterminated);
        assert_eq!(t[3].text, "/etc/squid/my list");
        assert_eq!(t[4].text, "10.0.0.1");
        assert!(t[5].quoted && t[5].unterminated);
        assert_eq!(t[5].raw(), "\"/open");
        assert!(!t[3].is("/etc/squid/my list"));
    }

    #[test]
    fn overlong_lines_are_found_with_where_they_start() {
        assert_eq!(overlong_line("via on\n# comment\n", 6), None);
        assert_eq!(overlong_line("via on\n  via off\n", 6), Some((2, 3)));
        // Continuations count together; comment lines do not count.
        let text = "via\nacl a \\\n# a long comment line\n  src 1\n";
        assert_eq!(overlong_line(text, 12), None);
        assert_eq!(overlong_line(text, 11), Some((2, 1)));
        assert_eq!(overlong_line(&"x".repeat(100), 99), Some((1, 1)));
    }
}
