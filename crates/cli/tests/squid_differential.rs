//! Differential tests against Debian's Squid 5.7: one squid.conf body, the same requests
//! through a real Squid and through `proxyfleet proxy`, and the same answers expected —
//! status, `X-Squid-Error`, `Location`, the header fields that reach the origin, the
//! reply's fields, and the access log line in a `logformat` of the deterministic codes.
//! Each case says what it covers; a difference fails with both answers side by side.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::squid::{self, Squid};
use common::{start, ProxyUnderTest, APP};
use testkit::client::exchange_raw;
use testkit::origin::Origin;

/// A temporary directory Squid (which runs as the `proxy` user) can read: for the password
/// files and helper scripts both proxies are given.
fn readable_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    dir
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// What is compared of one answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    squid_error: Option<String>,
    location: Option<String>,
    /// For `/headers`: the request fields the origin saw (Via without versions).
    origin_saw: Option<BTreeSet<String>>,
    /// Reply fields the test asks about.
    reply_fields: Vec<(String, Option<String>)>,
}

struct Pair {
    squid: Squid,
    ours: ProxyUnderTest,
}

fn pair(body: &str) -> Option<Pair> {
    if let Some(why) = squid::unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    // Squid caches in memory by default; proxyfleet never caches.
    let shared =
        format!("visible_hostname diff.test\ndns_nameservers 127.0.0.1\ncache deny all\n{body}");
    let squid = Squid::start(&shared);
    let ours = start(&format!("http_port 127.0.0.1:0\n{shared}"));
    Some(Pair { squid, ours })
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn answer(proxy: SocketAddr, request: &str, reply_fields: &[&str]) -> Answer {
    let raw = exchange_raw(APP, proxy, request.as_bytes());
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let origin_saw = request.contains("/headers ").then(|| {
        body.lines()
            .map(|l| {
                let lower = l.to_ascii_lowercase();
                match lower.strip_prefix("via: ") {
                    // Each proxy names itself with its product: keep only the names.
                    Some(via) => format!(
                        "via: {}",
                        via.split(',')
                            .map(|e| e.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => lower,
                }
            })
            // Squid asks for fresh content on behalf of its cache (proxyfleet has none), and
            // spells out HTTP/1.1's default `Connection: keep-alive`.
            .filter(|l| {
                !l.starts_with("cache-control: max-age=")
                    && l != "connection: keep-alive"
                    && !l.is_empty()
            })
            .collect()
    });
    Answer {
        status,
        squid_error: field(head, "X-Squid-Error")
            .map(|v| v.split(' ').next().unwrap_or("").to_string()),
        location: field(head, "Location").map(str::to_string),
        origin_saw,
        reply_fields: reply_fields
            .iter()
            .map(|n| (n.to_string(), field(head, n).map(str::to_string)))
            .collect(),
    }
}

/// Sends each request to both and compares; returns how many cases were compared.
fn compare(p: &Pair, cases: &[(&str, String, &[&str])]) -> usize {
    let mut differences = Vec::new();
    for (what, request, fields) in cases {
        let theirs = answer(p.squid.addr, request, fields);
        let ours = answer(p.ours.addr(), request, fields);
        if theirs != ours {
            differences.push(format!(
                "{what}:\n  squid:      {theirs:?}\n  proxyfleet: {ours:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} differ:\n{}",
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
    cases.len()
}

fn get(url: &str, fields: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n")
}

/// The access logs of both, in the deterministic format, line by line.
fn compare_logs(p: &Pair, n: usize) {
    let read = |path: std::path::PathBuf| {
        testkit::wait::until(
            &format!("{n} log lines"),
            std::time::Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Not Squid's readiness probe from 127.0.0.1 (the clients are elsewhere).
                let lines: Vec<String> = text
                    .lines()
                    .filter(|l| !l.starts_with("127.0.0.1 "))
                    .map(str::to_string)
                    .collect();
                (lines.len() >= n).then_some(lines)
            },
        )
    };
    let theirs = read(p.squid.access_log_path());
    let ours = read(p.ours.access_log_path());
    let differing: Vec<String> = theirs
        .iter()
        .zip(&ours)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  squid:      {a}\n  proxyfleet: {b}"))
        .collect();
    assert!(
        differing.is_empty(),
        "log lines differ:\n{}",
        differing.join("\n")
    );
}

/// The log format both write: no times, sizes or addresses that legitimately differ.
const DIFF_FORMAT: &str =
    "logformat diff %>a %rm %ru %>Hs %Ss %un \"%{User-Agent}>h\" \"%{X-Team}>h\"\n\
                           access_log ACCESS_LOG diff\n";

#[test]
fn acl_types_rules_and_deny_info_answer_as_squid_does() {
    let origin = Origin::start("127.30.0.71");
    let Some(p) = pair(&format!(
        "acl app src 127.20.0.0/16\n\
         acl p_block urlpath_regex ^/block\n\
         acl p_redir urlpath_regex ^/redir\n\
         acl p_reset urlpath_regex ^/reset\n\
         acl p_miss urlpath_regex ^/miss\n\
         acl p_nd urlpath_regex ^/nd\n\
         acl p_exe url_regex -i \\.exe$\n\
         acl bots browser -i ^badbot\n\
         acl red req_header X-Team -i ^red$\n\
         acl evil referer_regex -i evil\\.test\n\
         acl puts method PUT\n\
         acl low_ports port 1-1023\n\
         acl here localip 127.0.0.1\n\
         acl p_here urlpath_regex ^/here\n\
         acl always time SMTWHFA 00:00-23:59\n\
         acl p_time urlpath_regex ^/time\n\
         acl ftp proto FTP\n\
         deny_info ERR_BLOCKED p_block\n\
         deny_info 302:http://block.test/?u=%s p_redir\n\
         deny_info TCP_RESET p_reset\n\
         http_access deny p_block\n\
         http_access deny p_redir\n\
         http_access deny p_reset\n\
         http_access deny p_exe\n\
         http_access deny bots\n\
         http_access deny red\n\
         http_access deny evil\n\
         http_access deny puts\n\
         http_access deny low_ports\n\
         http_access deny p_here here\n\
         http_access deny p_time always\n\
         http_access deny ftp\n\
         http_access allow app\n\
         http_access deny all\n\
         miss_access deny p_miss\n\
         miss_access allow all\n\
         never_direct allow p_nd\n\
         never_direct allow CONNECT\n\
         {DIFF_FORMAT}"
    )) else {
        return;
    };
    let o = origin.url();
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("allowed", get(&format!("{o}/small"), ""), &[]),
        ("deny_info page", get(&format!("{o}/block/x"), ""), &[]),
        ("deny_info redirect", get(&format!("{o}/redir?a=1"), ""), &[]),
        ("deny_info TCP_RESET", get(&format!("{o}/reset"), ""), &[]),
        ("url_regex -i", get(&format!("{o}/setup.EXE"), ""), &[]),
        ("browser", get(&format!("{o}/small"), "User-Agent: BadBot/1.0\r\n"), &[]),
        ("browser, other agent", get(&format!("{o}/small"), "User-Agent: curl/8\r\n"), &[]),
        ("req_header", get(&format!("{o}/small"), "X-Team: RED\r\n"), &[]),
        ("req_header, other value", get(&format!("{o}/small"), "X-Team: blue\r\n"), &[]),
        ("referer_regex", get(&format!("{o}/small"), "Referer: http://www.evil.test/\r\n"), &[]),
        ("method", format!("PUT {o}/small HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), &[]),
        ("port", get("http://127.30.0.71:81/small", ""), &[]),
        ("localip", get(&format!("{o}/here"), ""), &[]),
        ("time", get(&format!("{o}/time"), ""), &[]),
        ("miss_access", get(&format!("{o}/miss"), ""), &[]),
        ("never_direct without parents", get(&format!("{o}/nd"), ""), &[]),
        ("ftp, denied", get("ftp://127.30.0.71/file", ""), &[]),
        (
            "CONNECT never_direct without parents",
            "CONNECT 127.30.0.71:443 HTTP/1.1\r\nHost: 127.30.0.71:443\r\nConnection: close\r\n\r\n"
                .to_string(),
            &[],
        ),
    ];
    let n = compare(&p, &cases);
    compare_logs(&p, n);
}

#[test]
fn header_rules_reply_rules_and_formats_answer_as_squid_does() {
    let origin = Origin::start("127.30.0.72");
    let Some(p) = pair(
        "acl app src 127.20.0.0/16\n\
         acl html rep_mime_type -i ^text/html\n\
         acl teapot http_status 418\n\
         acl plain rep_header Content-Type ^text/plain\n\
         http_access allow app\n\
         http_access deny all\n\
         http_reply_access deny html\n\
         http_reply_access allow all\n\
         request_header_access User-Agent deny all\n\
         request_header_replace User-Agent Hidden/1.0\n\
         request_header_access X-Secret deny all\n\
         request_header_access Referer deny all\n\
         request_header_access X-Forwarded-For deny all\n\
         request_header_add X-Added \"yes\" all\n\
         request_header_add X-Client \"%>a\" app\n\
         reply_header_add X-Reply-Added \"r\" teapot\n\
         reply_header_add X-Plain \"p\" plain\n\
         reply_header_access X-Reply-Added allow all\n\
         logformat diff %>a %rm %ru %>Hs %Ss %un \"%{User-Agent}>h\" \"%{X-Team}>h\" %<h{Content-Type}\n\
         access_log ACCESS_LOG diff\n",
    ) else {
        return;
    };
    let o = origin.url();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "request fields: denied, replaced, added",
            get(
                &format!("{o}/headers"),
                "User-Agent: curl/8\r\nX-Secret: s\r\nReferer: http://r.test/\r\nX-Team: blue\r\nX-Forwarded-For: 10.1.1.1\r\n",
            ),
            &["X-Plain", "X-Reply-Added"],
        ),
        ("http_status and reply_header_add", get(&format!("{o}/status/418"), ""), &["X-Reply-Added", "X-Plain"]),
        ("rep_mime_type in http_reply_access", get(&format!("{o}/page"), ""), &[]),
        ("query terms in the log", get(&format!("{o}/small?token=secret"), ""), &["X-Plain"]),
    ];
    let n = compare(&p, &cases);
    compare_logs(&p, n);
}

#[test]
fn basic_auth_answers_as_squid_does() {
    const NCSA: &str = "/usr/lib/squid/basic_ncsa_auth";
    if !std::path::Path::new(NCSA).exists() {
        eprintln!("SKIPPED: {NCSA} is missing (install squid)");
        return;
    }
    let dir = readable_dir();
    let hash = std::process::Command::new("openssl")
        .args(["passwd", "-1", "wonderland"])
        .output()
        .expect("openssl");
    let passwd = dir.path().join("passwd");
    std::fs::write(
        &passwd,
        format!("alice:{}", String::from_utf8(hash.stdout).unwrap()),
    )
    .unwrap();
    set_mode(&passwd, 0o644);
    // An external ACL on the login (an LDAP group check's shape): alice is in, nobody else.
    let group = dir.path().join("group.sh");
    std::fs::write(
        &group,
        "#!/bin/sh
while read -r user rest; do
         if [ \"$user\" = alice ]; then echo OK; else echo ERR; fi
done
",
    )
    .unwrap();
    set_mode(&group, 0o755);
    let origin = Origin::start("127.30.0.73");
    let Some(p) = pair(&format!(
        "auth_param basic program {NCSA} {}\n\
         auth_param basic realm Diff Realm\n\
         external_acl_type group ttl=60 %LOGIN {}\n\
         acl app src 127.20.0.0/16\n\
         acl authed proxy_auth REQUIRED\n\
         acl admins proxy_auth alice\n\
         acl in_group external group staff\n\
         acl admin_path urlpath_regex ^/admin\n\
         acl group_path urlpath_regex ^/group\n\
         http_access deny admin_path !admins\n\
         http_access deny group_path !in_group\n\
         http_access allow app authed\n\
         http_access deny all\n\
         {DIFF_FORMAT}",
        passwd.display(),
        group.display()
    )) else {
        return;
    };
    use base64::Engine as _;
    let basic = |c: &str| {
        format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    };
    let o = origin.url();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "no credentials",
            get(&format!("{o}/small"), ""),
            &["Proxy-Authenticate"],
        ),
        (
            "wrong password",
            get(&format!("{o}/small"), &basic("alice:nope")),
            &["Proxy-Authenticate"],
        ),
        (
            "unknown user",
            get(&format!("{o}/small"), &basic("mallory:x")),
            &[],
        ),
        (
            "right",
            get(&format!("{o}/small"), &basic("alice:wonderland")),
            &[],
        ),
        (
            "user names ignore case",
            get(&format!("{o}/small"), &basic("ALICE:wonderland")),
            &[],
        ),
        (
            "not malformed",
            get(&format!("{o}/small"), "Proxy-Authorization: Basic !!!\r\n"),
            &[],
        ),
        (
            "admin path, alice",
            get(&format!("{o}/admin"), &basic("alice:wonderland")),
            &[],
        ),
    ];
    let n = compare(&p, &cases);
    compare_logs(&p, n);
}

#[test]
fn url_rewriting_answers_as_squid_does() {
    let origin = Origin::start("127.30.0.74");
    let dir = readable_dir();
    let helper = dir.path().join("rewrite.sh");
    // Every answer Squid 5.7 reads, chosen by the request's path.
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             while read -r url rest; do\n\
             case \"$url\" in\n\
             */rewrite*) echo \"OK rewrite-url={o}/small?rewritten\" ;;\n\
             */redirect*) echo \"OK status=302 url=http://moved.test/x\" ;;\n\
             */err*) echo ERR ;;\n\
             */bh*) echo \"BH message=broken\" ;;\n\
             */legacy-url*) echo \"{o}/headers\" ;;\n\
             */legacy-redir*) echo \"301:http://moved.test/legacy\" ;;\n\
             *:443) echo \"OK status=302 url=http://no-tunnels.test/\" ;;\n\
             *) echo \"\" ;;\n\
             esac\n\
             done\n",
            o = origin.url()
        ),
    )
    .unwrap();
    set_mode(&helper, 0o755);
    let Some(p) = pair(&format!(
        "url_rewrite_program {}\n\
         url_rewrite_children 2 startup=1\n\
         acl app src 127.20.0.0/16\n\
         acl skip urlpath_regex ^/skip\n\
         url_rewrite_access deny skip\n\
         url_rewrite_access allow all\n\
         http_access allow app\n\
         http_access deny all\n\
         {DIFF_FORMAT}",
        helper.display()
    )) else {
        return;
    };
    let o = origin.url();
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("rewrite-url", get(&format!("{o}/rewrite"), ""), &[]),
        ("status=302 url=", get(&format!("{o}/redirect"), ""), &[]),
        ("ERR: unchanged", get(&format!("{o}/err"), ""), &[]),
        ("BH: unchanged after retries", get(&format!("{o}/bh"), ""), &[]),
        ("old-style URL", get(&format!("{o}/legacy-url"), ""), &[]),
        ("old-style 301:URL", get(&format!("{o}/legacy-redir"), ""), &[]),
        ("empty answer", get(&format!("{o}/plain"), ""), &[]),
        ("url_rewrite_access deny", get(&format!("{o}/skip/rewrite"), ""), &[]),
        (
            "CONNECT redirected",
            "CONNECT 127.30.0.74:443 HTTP/1.1\r\nHost: 127.30.0.74:443\r\nConnection: close\r\n\r\n"
                .to_string(),
            &[],
        ),
    ];
    let n = compare(&p, &cases);
    compare_logs(&p, n);
    // Both agreeing is only worth something if the helper did answer.
    let rewritten = answer(p.ours.addr(), &get(&format!("{o}/rewrite"), ""), &[]);
    assert_eq!(rewritten.status, 200, "{rewritten:?}");
    let moved = answer(p.ours.addr(), &get(&format!("{o}/legacy-redir"), ""), &[]);
    assert_eq!(
        (moved.status, moved.location.as_deref()),
        (301, Some("http://moved.test/legacy"))
    );
    assert!(origin.seen().iter().any(|s| s.uri == "/small?rewritten"));
}

#[test]
fn url_rewrite_host_header_off_keeps_the_clients_host_as_squid_does() {
    let origin = Origin::start("127.30.0.84");
    let dir = readable_dir();
    let helper = dir.path().join("rewrite.sh");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nwhile read -r url rest; do echo \"OK rewrite-url={}/small\"; done\n",
            origin.url()
        ),
    )
    .unwrap();
    set_mode(&helper, 0o755);
    let Some(p) = pair(&format!(
        "url_rewrite_program {}\n\
         url_rewrite_host_header off\n\
         acl app src 127.20.0.0/16\n\
         http_access allow app\n",
        helper.display()
    )) else {
        return;
    };
    let request =
        "GET http://public.test/page HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n";
    for proxy in [p.squid.addr, p.ours.addr()] {
        let reply = exchange_raw(APP, proxy, request.as_bytes());
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    let hosts: Vec<Option<String>> = origin
        .seen()
        .iter()
        .map(|s| s.header("host").map(String::from))
        .collect();
    assert_eq!(
        hosts,
        [Some("public.test".into()), Some("public.test".into())]
    );
}

#[test]
fn external_acls_answer_as_squid_does() {
    let origin = Origin::start("127.30.0.75");
    let dir = readable_dir();
    let helper = dir.path().join("teams.sh");
    // OK when the X-Team field is one of the ACL's arguments; BH for "broken".
    std::fs::write(
        &helper,
        "#!/bin/sh\n\
         while read -r src team rest; do\n\
         case \"$team\" in broken) echo 'BH message=oops'; continue ;; esac\n\
         case \" $rest \" in *\" $team \"*) echo OK ;; *) echo ERR ;; esac\n\
         done\n",
    )
    .unwrap();
    set_mode(&helper, 0o755);
    let Some(p) = pair(&format!(
        "external_acl_type teams ttl=60 negative_ttl=0 children-max=2 %SRC %>{{X-Team}} {}\n\
         acl app src 127.20.0.0/16\n\
         acl allowed_teams external teams blue green\n\
         acl p_teams urlpath_regex ^/teams\n\
         http_access deny p_teams !allowed_teams\n\
         http_access allow app\n\
         http_access deny all\n\
         {DIFF_FORMAT}",
        helper.display()
    )) else {
        return;
    };
    let o = origin.url();
    let team = |t: &str| format!("X-Team: {t}\r\n");
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("OK", get(&format!("{o}/teams/a"), &team("blue")), &[]),
        (
            "OK, remembered",
            get(&format!("{o}/teams/b"), &team("blue")),
            &[],
        ),
        ("ERR", get(&format!("{o}/teams/c"), &team("red")), &[]),
        ("no field: -", get(&format!("{o}/teams/d"), ""), &[]),
        ("BH", get(&format!("{o}/teams/e"), &team("broken")), &[]),
        ("not asked", get(&format!("{o}/small"), &team("red")), &[]),
    ];
    let n = compare(&p, &cases);
    compare_logs(&p, n);
    let blue = answer(
        p.ours.addr(),
        &get(&format!("{o}/teams/f"), &team("green")),
        &[],
    );
    assert_eq!(blue.status, 200, "the helper said OK: {blue:?}");
}

#[test]
fn follow_x_forwarded_for_answers_as_squid_does() {
    let origin = Origin::start("127.30.0.76");
    let Some(p) = pair(&format!(
        "acl balancer src {APP}\n\
         acl inner_hop src 127.20.0.9\n\
         acl office src 10.1.0.0/16\n\
         follow_x_forwarded_for allow balancer\n\
         follow_x_forwarded_for allow inner_hop\n\
         follow_x_forwarded_for deny all\n\
         http_access allow office\n\
         http_access deny all\n\
         {DIFF_FORMAT}"
    )) else {
        return;
    };
    let o = origin.url();
    let xff = |v: &str| format!("X-Forwarded-For: {v}\r\n");
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "believed",
            get(&format!("{o}/headers"), &xff("10.1.2.3")),
            &[],
        ),
        (
            "no field: the balancer itself",
            get(&format!("{o}/small"), ""),
            &[],
        ),
        (
            "two trusted hops",
            get(&format!("{o}/small"), &xff("10.1.2.3, 127.20.0.9")),
            &[],
        ),
        (
            "an untrusted hop stops the walk",
            get(&format!("{o}/small"), &xff("10.1.2.3, 127.20.0.8")),
            &[],
        ),
        (
            "garbage left of the client",
            get(&format!("{o}/small"), &xff("nonsense, 10.1.2.4")),
            &[],
        ),
        (
            "garbage right of it",
            get(&format!("{o}/small"), &xff("10.1.2.3, nonsense")),
            &[],
        ),
        (
            "two fields",
            get(
                &format!("{o}/small"),
                "X-Forwarded-For: 10.1.2.5\r\nX-Forwarded-For: 127.20.0.9\r\n",
            ),
            &[],
        ),
    ];
    let n = compare(&p, &cases);
    compare_logs(&p, n);
}

#[test]
fn maxconn_answers_as_squid_does() {
    use std::io::Write;
    let origin = Origin::start("127.30.0.81");
    let Some(p) = pair(&format!(
        "acl app src 127.20.0.0/16\n\
         acl busy maxconn 1\n\
         http_access deny busy\n\
         http_access allow app\n\
         http_access deny all\n\
         {DIFF_FORMAT}"
    )) else {
        return;
    };
    let url = format!("{}/small", origin.url());
    // One connection held open (a keep-alive request answered on it), then a second.
    let statuses = |proxy: SocketAddr| {
        let mut held = testkit::client::connect_from(APP, proxy);
        held.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (first, _) = testkit::client::read_response(&mut held);
        let second = answer(proxy, &get(&url, ""), &[]);
        drop(held);
        (
            first.split_whitespace().nth(1).unwrap_or("").to_string(),
            second.status,
        )
    };
    let theirs = statuses(p.squid.addr);
    let ours = statuses(p.ours.addr());
    assert_eq!(ours, theirs, "squid: {theirs:?}, proxyfleet: {ours:?}");
    assert_eq!(
        ours,
        ("200".to_string(), 403),
        "the second connection is over the limit"
    );
}

/// curl's status for `url` through `proxy` with `--proxy-digest` and `credentials`
/// (curl answers the 407's challenge itself), from the app network.
fn curl_digest(proxy: SocketAddr, url: &str, credentials: Option<&str>) -> String {
    let mut args = vec![
        "-s".to_string(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "--max-time".into(),
        "10".into(),
        "--interface".into(),
        APP.into(),
        "-x".into(),
        format!("http://{proxy}"),
    ];
    if let Some(c) = credentials {
        args.extend(["--proxy-digest".into(), "-U".into(), c.into()]);
    }
    args.push(url.into());
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn digest_auth_answers_as_squid_does() {
    const DIGEST: &str = "/usr/lib/squid/digest_file_auth";
    if !std::path::Path::new(DIGEST).exists() {
        eprintln!("SKIPPED: {DIGEST} is missing (install squid)");
        return;
    }
    let dir = readable_dir();
    let passwd = dir.path().join("digest");
    std::fs::write(&passwd, "alice:wonderland\n").unwrap();
    set_mode(&passwd, 0o644);
    let origin = Origin::start("127.30.0.83");
    let Some(p) = pair(&format!(
        "auth_param digest program {DIGEST} {}\n\
         auth_param digest realm Diff Digest\n\
         acl app src 127.20.0.0/16\n\
         acl authed proxy_auth REQUIRED\n\
         http_access allow app authed\n\
         http_access deny all\n\
         {DIFF_FORMAT}",
        passwd.display()
    )) else {
        return;
    };
    let url = format!("{}/small", origin.url());
    for (what, credentials) in [
        ("right", Some("alice:wonderland")),
        ("wrong password", Some("alice:nope")),
        ("unknown user", Some("mallory:x")),
        ("none", None),
    ] {
        let theirs = curl_digest(p.squid.addr, &url, credentials);
        let ours = curl_digest(p.ours.addr(), &url, credentials);
        assert_eq!(ours, theirs, "{what}: squid {theirs}, proxyfleet {ours}");
    }
    assert_eq!(
        curl_digest(p.ours.addr(), &url, Some("alice:wonderland")),
        "200"
    );
    let challenge = answer(p.ours.addr(), &get(&url, ""), &["Proxy-Authenticate"]);
    let value = challenge.reply_fields[0].1.clone().unwrap_or_default();
    assert!(
        value.starts_with("Digest realm=\"Diff Digest\", nonce=\""),
        "{value}"
    );
}
