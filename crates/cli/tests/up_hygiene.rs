//! What a real `proxyfleet up` leaves on the host for others to read, started with umask 000
//! on a state directory someone made 0755: the state directory and `instances/` are 0711
//! (up says so; search only, so an instance running as another user reaches its own
//! directory), an instance's directory is 0700, the access log its proxy opens 0640, state.db
//! and admin.token 0600; the instance's environment is exactly PATH, HOME (its directory),
//! LANG (C.UTF-8), the template's variables and proxyfleet's own PROXYFLEET_*. `check` warns
//! about a `sh -c` script that splices in a placeholder.
//!
//! Networks: 127.88.x.0/24 and 127.89.x.0/24 (zones), app clients from 127.20.0.0/16.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::up::{proxy_stack, Up};
use common::BIN;
use testkit::process::run;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `proxy_stack(net)` with an access log in the instance's directory and a variable of the
/// template's own.
fn stack(net: u8) -> String {
    let text = proxy_stack(net, 1, 1, 1);
    let marker = "    stop_timeout: 5s\n";
    assert!(text.contains(marker) && text.contains("        access_log none\n"));
    text.replace(
        marker,
        &format!("{marker}    environment:\n      GREETING: hello\n"),
    )
    .replace(
        "        access_log none\n",
        "        access_log {dir}/access.log\n",
    )
}

#[test]
fn state_and_instances_are_private_and_instances_get_the_documented_environment() {
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // umask 000: every mode below is proxyfleet's choice, none the umask's.
    let up = Up::start_through_shell(state, "umask 000", &stack(88), &[]);
    let canonical = up.dir().canonicalize().unwrap();
    let said: Vec<String> = up
        .child
        .stdout()
        .into_iter()
        .filter(|l| l.contains("state directory"))
        .collect();
    assert_eq!(
        said,
        [format!(
            "proxyfleet up: state directory {} was mode 0755, now 0711",
            canonical.display()
        )],
        "said once"
    );

    let (id, _, _) = up.in_service().into_iter().next().expect("one instance");
    let instance_dir = canonical.join("instances").join(&id);
    let access_log = instance_dir.join("access.log");
    // The proxy opens its log at start; polled in case readiness came first.
    testkit::wait::until_true("the access log", Duration::from_secs(10), || {
        access_log.exists()
    });
    let modes: BTreeMap<&str, u32> = [
        ("state dir", mode(up.dir())),
        ("instances/", mode(&canonical.join("instances"))),
        ("instance dir", mode(&instance_dir)),
        ("squid.conf", mode(&instance_dir.join("squid.conf"))),
        ("stdout.log", mode(&instance_dir.join("stdout.log"))),
        ("access.log", mode(&access_log)),
        ("state.db", mode(&canonical.join("state.db"))),
        ("admin.token", mode(&canonical.join("admin.token"))),
        ("admin.addr", mode(&canonical.join("admin.addr"))),
    ]
    .into_iter()
    .collect();
    let shown: Vec<String> = modes.iter().map(|(k, m)| format!("{k} {m:04o}")).collect();
    println!("modes under umask 000: {}", shown.join(", "));
    let expected: BTreeMap<&str, u32> = [
        ("state dir", 0o711),
        ("instances/", 0o711),
        ("instance dir", 0o700),
        ("squid.conf", 0o600),
        ("stdout.log", 0o640),
        ("access.log", 0o640),
        ("state.db", 0o600),
        ("admin.token", 0o600),
        ("admin.addr", 0o600),
    ]
    .into_iter()
    .collect();
    assert_eq!(modes, expected);
    for wal in ["state.db-wal", "state.db-shm"] {
        let path = canonical.join(wal);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{wal} takes state.db's mode");
        }
    }

    let pid = up.pid_of(&id);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8(environ).unwrap();
    let vars: BTreeMap<&str, &str> = environ
        .split_terminator('\0')
        .filter_map(|v| v.split_once('='))
        .collect();
    println!("instance environment: {vars:?}");
    let own: BTreeMap<&str, &str> = vars
        .iter()
        .filter(|(k, _)| !k.starts_with("PROXYFLEET_"))
        .map(|(k, v)| (*k, *v))
        .collect();
    let home = instance_dir.display().to_string();
    let expected: BTreeMap<&str, &str> = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", home.as_str()),
        ("LANG", "C.UTF-8"),
        ("GREETING", "hello"),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        own, expected,
        "PATH, HOME, LANG and the template's, nothing else"
    );
}

#[test]
fn check_warns_about_a_placeholder_in_a_shell_script() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shell.yaml");
    let text = proxy_stack(89, 1, 1, 1);
    let argv = "    command: [proxyfleet, proxy, -f, \"{dir}/squid.conf\"]\n";
    assert!(text.contains(argv));
    let shell = "    command: [sh, -c, \"exec proxyfleet proxy -f {dir}/squid.conf\"]\n";
    std::fs::write(&file, text.replace(argv, shell)).unwrap();
    let (status, out, err) = run(
        BIN,
        &["check", "-f", file.to_str().unwrap()],
        Duration::from_secs(20),
    );
    println!("{out}");
    assert_eq!(
        status.code(),
        Some(0),
        "a warning, not an error: {out}{err}"
    );
    assert!(
        out.contains("warning: launch_templates.proxy: the sh -c script interpolates {dir}"),
        "{out}"
    );
    std::fs::write(&file, &text).unwrap();
    let (_, out, _) = run(
        BIN,
        &["check", "-f", file.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(
        !out.contains("launch_templates"),
        "argv placeholders: {out}"
    );
}
