//! squid.conf text, read with `include`s and ACL value files confined to a temporary
//! directory that holds a Debian-like tree (`/etc/squid/conf.d/debian.conf`, two value
//! files), so the fuzzer can include and glob but never read `/dev/zero` or `/etc/shadow`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proxyfleet_proxy::acl::{AccessRules, Check, Facts};
use proxyfleet_proxy::config::{parse_str_confined, Config, ConfigError};

/// The files below the root, as absolute names the text can include.
const TREE: &[(&str, &str)] = &[
    (
        "etc/squid/conf.d/debian.conf",
        "#\n# Squid configuration settings for Debian\n#\n\nlogfile_rotate 0\n",
    ),
    (
        "etc/squid/conf.d/local.conf",
        "acl localnet src 127.20.0.0/16\n",
    ),
    (
        "etc/squid/ips.txt",
        "# app network\n127.20.0.0/16\n::1\n\n127.0.0.1 x\n",
    ),
    ("etc/squid/domains.txt", ".example.test\nservice.test\n"),
];

/// The root (created once per process, under `TMPDIR`) and the top-level file's path in it.
fn root() -> &'static (PathBuf, PathBuf) {
    static ROOT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("proxyfleet-fuzz-{}", std::process::id()));
        for (name, text) in TREE {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).expect("create the fuzz root");
            std::fs::write(&path, text).expect("write the fuzz root");
        }
        let main = root.join("etc/squid/squid.conf");
        (root, main)
    })
}

/// Requests every parsed configuration is asked about.
fn requests() -> Vec<(Facts<'static>, &'static str)> {
    const LOOPBACK: &[IpAddr] = &[IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];
    const SERVICE: &[IpAddr] = &[IpAddr::V4(std::net::Ipv4Addr::new(127, 30, 0, 10))];
    let get = |client: &str, host: &'static str, port, dst_ips| Facts {
        client: client.parse().unwrap(),
        method: "GET",
        scheme: "http",
        host,
        port,
        path: "/",
        dst_ips,
        ..Facts::connection(std::net::Ipv4Addr::UNSPECIFIED.into())
    };
    vec![
        (
            get("127.20.0.5", "127.30.0.10", 80, SERVICE),
            "app to service",
        ),
        (get("127.20.0.5", "service.test", 80, &[]), "app to a name"),
        (
            get("127.0.0.1", "localhost", 3128, LOOPBACK),
            "localhost to itself",
        ),
        (
            get("::1", "a.example.test", 8080, SERVICE),
            "::1 to a subdomain",
        ),
        (
            Facts {
                method: "CONNECT",
                scheme: "",
                path: "",
                ..get("10.0.0.1", "127.30.0.10", 443, SERVICE)
            },
            "CONNECT 443",
        ),
        (
            Facts {
                path: "/squid-internal-mgr/info",
                ..get("127.0.0.1", "localhost", 3128, LOOPBACK)
            },
            "cache manager",
        ),
        (
            Facts::connection("127.10.1.10".parse().unwrap()),
            "connection",
        ),
    ]
}

/// What a configuration decides, in comparable form (the ACLs themselves hold hash sets,
/// whose order differs between two parses, so they are compared by their decisions).
#[derive(Debug, PartialEq)]
struct Meaning {
    text: String,
    decisions: Vec<(bool, bool)>,
}

fn decide(rules: &AccessRules, f: &Facts, what: &str) -> bool {
    let allowed = rules.allows(f);
    // Deciding before the lookup must agree with deciding after it.
    match rules.check(f) {
        Check::Allow => assert!(allowed, "{what}: early decision differs"),
        Check::Deny => assert!(!allowed, "{what}: early decision differs"),
        _ => {}
    }
    allowed
}

fn meaning(c: &Config) -> Meaning {
    let text = format!(
        "{:?} {:?} {} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?} {:?} {:?}",
        c.http_ports,
        c.forwarded_for,
        c.via,
        c.request_header_max_size,
        c.reply_header_max_size,
        c.connect_timeout,
        c.read_timeout,
        c.request_timeout,
        c.client_idle_pconn_timeout,
        c.client_lifetime,
        c.shutdown_lifetime,
        c.visible_hostname,
        c.dns_nameservers,
        c.max_filedescriptors,
        c.workers,
        c.ignored,
        c.access_logs
            .iter()
            .map(|l| (&l.path, &l.location))
            .collect::<Vec<_>>(),
    );
    let decisions = requests()
        .iter()
        .map(|(f, what)| {
            (
                decide(&c.http_access, f, what),
                decide(&c.proxy_protocol_access, f, what),
            )
        })
        .collect();
    Meaning { text, decisions }
}

fn check_error(e: &ConfigError, text: &str, main: &Path) {
    let at = e.location();
    assert!(!e.message().is_empty());
    if at.file == main && at.line > 0 {
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(at.line <= lines.len(), "{e}: line past the end of the text");
        let width = lines[at.line - 1].chars().count();
        assert!(
            at.column >= 1 && at.column <= width + 1,
            "{e}: column outside line {} ({width} characters)",
            at.line
        );
    }
}

pub fn run(data: &[u8]) {
    // As `parse_file` reads a file: invalid UTF-8 replaced.
    let text = String::from_utf8_lossy(data);
    let text = &*text;
    let (root, main) = root();
    let first = parse_str_confined(text, main, root);
    let second = parse_str_confined(text, main, root);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            // A file without http_port parses (as `squid -k parse` passes it) and says so.
            assert!(
                !a.http_ports.is_empty()
                    || a.notes
                        .iter()
                        .any(|(_, n)| n.contains("no http_port configured")),
                "no http_port and no note"
            );
            assert_eq!(meaning(a), meaning(b), "two parses of one text differ");
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "two parses of one text fail differently");
            check_error(a, text, main);
        }
        _ => panic!("parses once, fails once: {first:?} / {second:?}"),
    }
}
