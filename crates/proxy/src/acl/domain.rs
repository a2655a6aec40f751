//! Domain sets for `dstdomain` ACLs.
//!
//! Squid's semantics: `.example.com` matches `example.com` and every name under it;
//! `example.com` matches only itself; comparison ignores case. Lookups hash the host and each
//! of its parent domains, so a request costs one probe per label whatever the set's size.

use std::collections::HashSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSet {
    /// Values without a leading dot, lowercased.
    exact: HashSet<String>,
    /// Values that had a leading dot, stored lowercased and without it.
    subtree: HashSet<String>,
}

impl DomainSet {
    pub fn add(&mut self, value: &str) -> Result<(), String> {
        let (subtree, name) = match value.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        // A fully-qualified `example.com.` is the same name.
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() || name.starts_with('.') || name.contains("..") {
            return Err(format!("'{value}' is not a domain name"));
        }
        let name = name.to_ascii_lowercase();
        if subtree {
            self.subtree.insert(name);
        } else {
            self.exact.insert(name);
        }
        Ok(())
    }

    /// `host` must already be lowercase (as [`super::Facts`] promises). An IP-literal host is
    /// compared as text: there is no reverse DNS (Squid's `-n` behaviour, always on).
    pub fn contains(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return false;
        }
        if self.exact.contains(host) || self.subtree.contains(host) {
            return true;
        }
        if self.subtree.is_empty() {
            return false;
        }
        host.match_indices('.')
            .any(|(i, _)| self.subtree.contains(&host[i + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> DomainSet {
        let mut s = DomainSet::default();
        for v in values {
            s.add(v).unwrap();
        }
        s
    }

    #[test]
    fn leading_dot_matches_domain_and_subdomains() {
        let s = set(&[".Example.com"]);
        assert!(s.contains("example.com"));
        assert!(s.contains("www.example.com"));
        assert!(s.contains("a.b.example.com"));
        assert!(!s.contains("badexample.com"));
        assert!(!s.contains("example.org"));
        assert!(!s.contains("com"));
    }

    #[test]
    fn without_dot_only_the_name_itself() {
        let s = set(&["example.com"]);
        assert!(s.contains("example.com"));
        assert!(!s.contains("www.example.com"));
    }

    #[test]
    fn trailing_dots_and_ip_literals() {
        let s = set(&["example.com.", "10.0.0.1", "::1"]);
        assert!(s.contains("example.com."));
        assert!(s.contains("example.com"));
        assert!(s.contains("10.0.0.1"));
        assert!(s.contains("::1"));
        assert!(!s.contains(""));
    }

    #[test]
    fn rejects_empty_names() {
        let mut s = DomainSet::default();
        assert_eq!(s.add(".").unwrap_err(), "'.' is not a domain name");
        assert_eq!(s.add("a..b").unwrap_err(), "'a..b' is not a domain name");
        assert_eq!(s, DomainSet::default(), "nothing was added");
    }
}
