//! `auth_param basic` end to end with Debian's own helper (`basic_ncsa_auth`, from the squid
//! package `.ci/run` installs) and a password file made by `openssl passwd`: right, wrong
//! and missing credentials, `%un` in the access log, a user list ACL that re-prompts, CONNECT,
//! and a helper that crashes (never answered as allowed).

mod common;

use std::path::Path;

use common::{base_config, start, APP};
use testkit::client::exchange_raw;
use testkit::origin::Origin;

const NCSA: &str = "/usr/lib/squid/basic_ncsa_auth";

fn status(reply: &str) -> u16 {
    reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// `GET url` with `Proxy-Authorization: Basic` for `credentials` (`user:password`), if any.
fn get(proxy: std::net::SocketAddr, url: &str, credentials: Option<&str>) -> String {
    use base64::Engine as _;
    let auth = credentials.map_or_else(String::new, |c| {
        format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    exchange_raw(
        APP,
        proxy,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
}

/// A password file with alice:wonderland and bob:builder (MD5-crypt, which the helper reads).
fn password_file(dir: &Path) -> std::path::PathBuf {
    let mut text = String::new();
    for (user, password) in [("alice", "wonderland"), ("bob", "builder")] {
        let out = std::process::Command::new("openssl")
            .args(["passwd", "-1", password])
            .output()
            .expect("openssl");
        assert!(out.status.success());
        text.push_str(&format!(
            "{user}:{}",
            String::from_utf8(out.stdout).unwrap()
        ));
    }
    let path = dir.join("passwd");
    std::fs::write(&path, text).unwrap();
    path
}

fn helper_present() -> bool {
    let present = Path::new(NCSA).exists();
    if !present {
        eprintln!("note: {NCSA} is missing (install squid): skipped");
    }
    present
}

#[test]
fn basic_auth_with_the_ncsa_helper() {
    if !helper_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let passwd = password_file(dir.path());
    let origin = Origin::start("127.30.0.62");
    let proxy = start(&base_config(&format!(
        "auth_param basic program {NCSA} {}\n\
         auth_param basic children 2\n\
         auth_param basic realm Example Egress\n\
         acl authed proxy_auth REQUIRED\n\
         acl admins proxy_auth alice\n\
         acl admin_path urlpath_regex ^/admin\n\
         http_access deny admin_path !admins\n\
         http_access allow app authed\n\
         http_access deny all",
        passwd.display()
    )));
    let p = proxy.addr();
    let url = format!("{}/small", origin.url());

    let missing = get(p, &url, None);
    assert_eq!(status(&missing), 407, "{missing}");
    assert!(missing.contains("Proxy-Authenticate: Basic realm=\"Example Egress\"\r\n"));
    assert!(missing.contains("X-Squid-Error: ERR_CACHE_ACCESS_DENIED 0"));
    assert_eq!(status(&get(p, &url, Some("alice:wrong"))), 407);
    assert_eq!(status(&get(p, &url, Some("mallory:x"))), 407);
    assert_eq!(status(&get(p, &url, Some("alice:wonderland"))), 200);
    // User names are not case-sensitive by default (casesensitive off).
    assert_eq!(status(&get(p, &url, Some("Bob:builder"))), 200);
    // bob is not in `admins`: the deny line ends with a proxy_auth ACL, so Squid asks again.
    let admin = format!("{}/admin", origin.url());
    assert_eq!(status(&get(p, &admin, Some("bob:builder"))), 407);
    assert_eq!(status(&get(p, &admin, Some("alice:wonderland"))), 200);

    // CONNECT asks too.
    let reply = exchange_raw(
        APP,
        p,
        format!("CONNECT {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr).as_bytes(),
    );
    assert_eq!(status(&reply), 407, "{reply}");

    let log = proxy.access_log(8);
    let alice = log
        .iter()
        .find(|l| l.contains("TCP_MISS/200") && l.contains(" alice "))
        .unwrap_or_else(|| panic!("no line with %un alice: {log:#?}"));
    assert!(alice.contains("/small alice HIER_DIRECT"), "{alice}");
    assert!(log.iter().any(|l| l.contains("TCP_DENIED/407")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains(" bob ")), "{log:#?}");
}

/// A helper that dies on every request: the request is refused (407), never let through;
/// one that dies on its first request only is replaced and its request asked again.
#[test]
fn a_crashing_helper_never_lets_a_request_through() {
    let dir = tempfile::tempdir().unwrap();
    let always = dir.path().join("always.sh");
    std::fs::write(&always, "#!/bin/sh\nread line\nexit 1\n").unwrap();
    let marker = dir.path().join("crashed-once");
    let once = dir.path().join("once.sh");
    std::fs::write(
        &once,
        format!(
            "#!/bin/sh\nread line\nif [ ! -e {m} ]; then touch {m}; exit 1; fi\necho OK\nwhile read line; do echo OK; done\n",
            m = marker.display()
        ),
    )
    .unwrap();
    for script in [&always, &once] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let origin = Origin::start("127.30.0.63");
    let url = format!("{}/small", origin.url());
    for (script, expected) in [(&always, 407), (&once, 200)] {
        let proxy = start(&base_config(&format!(
            "auth_param basic program {}\n\
             acl authed proxy_auth REQUIRED\n\
             http_access allow app authed\n\
             http_access deny all",
            script.display()
        )));
        let reply = get(proxy.addr(), &url, Some("alice:anything"));
        assert_eq!(status(&reply), expected, "{}: {reply}", script.display());
    }
    assert!(marker.exists(), "the once-crashing helper did crash");
}
