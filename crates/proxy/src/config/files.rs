//! Where `include` files and `"/path"` ACL value files are read from: the real file system,
//! or only a directory below which absolute names are re-rooted (for reading untrusted
//! text, e.g. the fuzz targets, which must never read `/dev/zero` or `/etc/shadow`) — and
//! how much one configuration has read from them, against the total cap (see `read`).

use std::path::{Component, Path, PathBuf};

use super::parse::read_text;
use super::read::Tally;

#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// Names mean what they say; relative ones are relative to the including file.
    Real,
    /// Only files below this directory: `/etc/x` means `ROOT/etc/x`, and `..` is refused.
    Confined(PathBuf),
}

/// One configuration's files: where they come from, and the bytes read from them so far.
#[derive(Debug)]
pub(super) struct Files {
    kind: Kind,
    tally: Tally,
}

impl Files {
    pub fn real() -> Files {
        Files {
            kind: Kind::Real,
            tally: Tally::default(),
        }
    }

    pub fn confined(root: PathBuf) -> Files {
        Files {
            kind: Kind::Confined(root),
            tally: Tally::default(),
        }
    }

    #[cfg(test)]
    pub fn with_tally(kind: Kind, tally: Tally) -> Files {
        Files { kind, tally }
    }

    /// Counts the main file's text, which the caller read (or was given).
    pub fn count(&self, text: &str) -> std::io::Result<()> {
        self.tally.charge(text.len() as u64)
    }

    /// The path of `name`, written in a file whose directory is `base` (which is already
    /// inside the root when confined, since every file read was). For a glob pattern the
    /// result is the pattern, with `base` (and the root) escaped.
    pub fn resolve(&self, base: &Path, name: &str, pattern: bool) -> Result<PathBuf, String> {
        let literal = |p: &Path| {
            if pattern {
                PathBuf::from(glob::Pattern::escape(&p.to_string_lossy()))
            } else {
                p.to_path_buf()
            }
        };
        let path = Path::new(name);
        match &self.kind {
            Kind::Real if path.is_absolute() => Ok(path.to_path_buf()),
            Kind::Real => Ok(literal(base).join(path)),
            Kind::Confined(root) => {
                if path.components().any(|c| c == Component::ParentDir) {
                    return Err(format!(
                        "'{name}' leaves {} ('..' is refused in confined reading)",
                        root.display()
                    ));
                }
                let relative: PathBuf = path
                    .components()
                    .filter(|c| matches!(c, Component::Normal(_)))
                    .collect();
                if path.is_absolute() {
                    Ok(literal(root).join(relative))
                } else {
                    Ok(literal(base).join(relative))
                }
            }
        }
    }

    /// The text of an included or value file, counted against the configuration's total.
    pub fn read(&self, path: &Path) -> std::io::Result<String> {
        let text = read_text(path)?;
        self.tally.charge(text.len() as u64)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_str_confined;
    use super::super::test_support::TempDir;
    use super::*;

    #[test]
    fn real_names_are_taken_as_written() {
        let base = Path::new("/etc/squid");
        let f = Files::real();
        assert_eq!(
            f.resolve(base, "/etc/x.conf", false).unwrap(),
            Path::new("/etc/x.conf")
        );
        assert_eq!(
            f.resolve(base, "conf.d/*.conf", true).unwrap(),
            Path::new("/etc/squid/conf.d/*.conf")
        );
        assert_eq!(
            f.resolve(Path::new("/a[1]"), "*.conf", true).unwrap(),
            Path::new("/a[[]1[]]/*.conf")
        );
    }

    #[test]
    fn confined_names_stay_below_the_root() {
        let f = Files::confined(PathBuf::from("/tmp/root"));
        let base = Path::new("/tmp/root/etc/squid");
        assert_eq!(
            f.resolve(base, "/dev/zero", false).unwrap(),
            Path::new("/tmp/root/dev/zero")
        );
        assert_eq!(
            f.resolve(base, "./conf.d/*.conf", true).unwrap(),
            Path::new("/tmp/root/etc/squid/conf.d/*.conf")
        );
        assert!(f.resolve(base, "../../../etc/passwd", false).is_err());
        assert!(f.resolve(base, "/etc/../../x", true).is_err());
    }

    /// End to end: a confined parse sees the root's files under their absolute names and
    /// never the real ones.
    #[test]
    fn confined_parse_reads_only_inside_the_root() {
        let dir = TempDir::new("confined");
        dir.write("etc/squid/conf.d/a.conf", "via off\n");
        dir.write("etc/ips.txt", "127.20.0.0/16\n");
        let main = dir.0.join("etc/squid/squid.conf");
        let c = parse_str_confined(
            "include /etc/squid/conf.d/*.conf\nacl apps src \"/etc/ips.txt\"\n\
             http_access allow apps\nhttp_port 3128\n",
            &main,
            &dir.0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.via);
        // /etc/hostname exists on the real system but not in the root.
        let e = parse_str_confined("include /etc/hostname\nhttp_port 3128\n", &main, &dir.0)
            .unwrap_err();
        assert!(e.message().contains("No such file"), "{e}");
        let e =
            parse_str_confined("include ../../../../etc/hostname\n", &main, &dir.0).unwrap_err();
        assert!(e.message().contains("'..' is refused"), "{e}");
    }

    /// The total counts every file each time it is read, the main file and ACL value files
    /// included; the file that would pass it is named at the line that reads it.
    #[test]
    fn one_configuration_reads_at_most_its_total() {
        use super::super::parse::Parser;
        use super::super::read::Tally;
        let dir = TempDir::new("total");
        dir.write("twenty.conf", "# eighteen bytes\n\n");
        dir.write("ips.txt", "127.20.0.0/16\n");
        let main = dir.0.join("squid.conf");
        let parse = |text: &str, cap: u64| {
            let files = Files::with_tally(Kind::Real, Tally::with_cap(cap));
            files.count(text).unwrap();
            let mut parser = Parser::new(main.clone(), files);
            parser
                .parse_text(text, &main, 0)
                .and_then(|()| parser.finish())
        };
        let text = "include twenty.conf twenty.conf\nacl a src \"ips.txt\"\nhttp_port 3128\n";
        // 67 bytes of main text, 2 x 18 included, 14 in the value file: 117.
        parse(text, 117).unwrap_or_else(|e| panic!("{e}"));
        let e = parse(text, 100).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:1:21: include: cannot read '{}': it would take the configuration's files \
                 together past the 100 bytes limit (85 bytes read before it, 18 bytes in it)",
                main.display(),
                dir.0.join("twenty.conf").display()
            )),
            "{e}"
        );
        let e = parse(text, 116).unwrap_err().to_string();
        assert!(
            e.contains(":2:11: acl 'a': cannot read value file '")
                && e.contains(
                    "past the 116 bytes limit (103 bytes read before it, 14 bytes in it)"
                ),
            "{e}"
        );
    }
}
