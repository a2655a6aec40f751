//! Where `include` files and `"/path"` ACL value files are read from: the real file system,
//! or only a directory below which absolute names are re-rooted (for reading untrusted
//! text, e.g. the fuzz targets, which must never read `/dev/zero` or `/etc/shadow`).

use std::path::{Component, Path, PathBuf};

use super::parse::read_text;

#[derive(Debug, Clone)]
pub(super) enum Files {
    /// Names mean what they say; relative ones are relative to the including file.
    Real,
    /// Only files below this directory: `/etc/x` means `ROOT/etc/x`, and `..` is refused.
    Confined(PathBuf),
}

impl Files {
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
        match self {
            Files::Real if path.is_absolute() => Ok(path.to_path_buf()),
            Files::Real => Ok(literal(base).join(path)),
            Files::Confined(root) => {
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

    pub fn read(&self, path: &Path) -> std::io::Result<String> {
        read_text(path)
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
        let f = Files::Real;
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
        let f = Files::Confined(PathBuf::from("/tmp/root"));
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
}
