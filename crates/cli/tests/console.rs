//! The web console in a real browser: the real `proxyfleet up`, headless Chromium driven
//! over WebDriver. The page must show two healthy targets, refuse a wrong token, terminate
//! an instance when clicked, show the replacement InService, keep its charts' history across
//! a reload, and scale the group; with `admin.read_requires_token`, ask for the token before
//! it shows anything.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`; when they are
//! absent the test installs them as root, and says SKIPPED otherwise. The test starts
//! Chromium itself (so the process is its own child, killed and reaped like every other) and
//! attaches chromedriver to it.
//!
//! The screenshot goes to `target/tmp/console.png`; with `PROXYFLEET_UPDATE_SCREENSHOT=1`
//! also to `docs/console.png`, the README's picture (not on every run: it would change the
//! committed file each time).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::up::{proxy_stack, s, Up};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use testkit::origin::Origin;
use testkit::process::Owned;

/// Two zones on 127.71.x.0/24, two `proxyfleet proxy` instances, HTTP health checks; the app
/// network (where the test's traffic comes from) is 127.71.20.0/24.
fn stack() -> String {
    let text = proxy_stack(71, 1, 2, 4);
    assert!(text.contains("app: 127.20.0.0/16"));
    text.replace("app: 127.20.0.0/16", "app: 127.71.20.0/24")
}

const PAGE_WAIT: Duration = Duration::from_secs(30);

/// Whether this run refreshes docs/console.png: then it lets traffic run for a while before
/// and after the terminate, so the picture's charts show the change.
fn updating_screenshot() -> bool {
    std::env::var_os("PROXYFLEET_UPDATE_SCREENSHOT").is_some()
}

#[test]
fn the_console_shows_the_fleet_terminates_and_scales() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        return;
    };
    let started = Instant::now();
    let origin = Origin::start("127.71.30.10");
    let up = Up::start(Some(&stack()));
    let status = up.status();
    let nodes: Vec<SocketAddr> = status["load_balancers"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{}:3128", s(&n["address"])).parse().unwrap())
        .collect();
    // Some flows, so the charts have lines to draw.
    let traffic = Traffic::start(nodes, format!("http://{}/", origin.addr));
    let admin = std::fs::read_to_string(up.dir().join("admin.addr")).unwrap();
    let page = Page::open(
        &chromium,
        &chromedriver,
        &format!("http://{}/", admin.trim()),
    );

    // Two healthy targets, healthy on each node, with the reason of the last transition.
    let targets = page.wait_for("two healthy targets", PAGE_WAIT, |p| {
        let t = p.targets();
        (t.len() == 2 && t.iter().all(|t| t["health"] == "Healthy")).then_some(t)
    });
    for t in &targets {
        let nodes = t["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2, "{t}");
        for n in nodes {
            assert!(s(n).starts_with("Healthy"), "{t}");
            assert!(s(n).contains("health checks passed"), "the reason: {t}");
        }
    }
    // The instances as `status` has them: zone, address, lifecycle, health, uptime, pid.
    let before = page.wait_for("two instances in service", PAGE_WAIT, |p| {
        let i = p.instances();
        (i.len() == 2 && i.iter().all(|i| i["lifecycle"] == "InService")).then_some(i)
    });
    for i in &before {
        let id = s(&i["id"]);
        let cli = up.instance(&id);
        assert_eq!(i["zone"], cli["zone"], "{i}");
        assert_eq!(
            s(&i["address"]),
            format!("{}:{}", s(&cli["address"]), cli["port"])
        );
        assert_eq!(s(&i["pid"]), cli["pid"].to_string());
        assert_eq!(i["health"], "Healthy");
        assert!(s(&i["uptime"]).ends_with('s'), "{i}");
    }
    // The balancer's nodes and listeners.
    let lbs = page.text("#lbs");
    for needle in [
        "front/a",
        "front/c",
        "127.71.1.10",
        "127.71.2.10",
        ":3128 → tg",
    ] {
        assert!(lbs.contains(needle), "{needle} in {lbs}");
    }
    // The activity history, newest first: the two launches.
    let activity = page.activity();
    assert!(activity.len() >= 2, "{activity:?}");
    assert!(activity
        .iter()
        .all(|a| s(&a["description"]).starts_with("Launching a new instance")));

    // Read-only without the token; a wrong token is refused and says so.
    assert_eq!(page.text("#mode"), "Read-only");
    assert!(page.terminate_buttons_disabled());
    page.type_into("#token-input", "not-the-token");
    page.click("#token-use");
    page.wait_for("the 401 notice", PAGE_WAIT, |p| {
        p.text("#notice-text").contains("401").then_some(())
    });
    assert_eq!(page.text("#mode"), "Read-only");
    assert!(page.terminate_buttons_disabled());

    let token = std::fs::read_to_string(up.dir().join("admin.token")).unwrap();
    page.type_into("#token-input", token.trim());
    page.click("#token-use");
    page.wait_for("admin mode", PAGE_WAIT, |p| {
        (p.text("#mode") == "Admin" && !p.terminate_buttons_disabled()).then_some(())
    });

    if updating_screenshot() {
        page.wait_for_history(60);
    }

    // Terminate the zone-a instance: a click, and a second click to confirm.
    let victim = before.iter().find(|i| i["zone"] == "a").unwrap();
    // A target's id is its instance's ADDRESS:PORT.
    let victim_target = s(&victim["address"]);
    let victim = s(&victim["id"]);
    let button = format!("#instances tbody tr[data-key='{victim}'] button.terminate");
    page.click(&button);
    assert_eq!(page.text(&button), "Confirm terminate");
    page.click(&button);
    page.wait_for("the terminate notice", PAGE_WAIT, |p| {
        p.text("#notice-text")
            .contains(&format!("Terminating {victim}"))
            .then_some(())
    });

    // The replacement turns InService, in the page, and two targets are healthy again.
    let old: Vec<String> = before.iter().map(|i| s(&i["id"])).collect();
    let replacement = page.wait_for("the replacement InService", Duration::from_secs(60), |p| {
        let new = p
            .instances()
            .into_iter()
            .find(|i| !old.contains(&s(&i["id"])) && i["lifecycle"] == "InService")?;
        let healthy = p
            .targets()
            .iter()
            .filter(|t| t["health"] == "Healthy")
            .count();
        (healthy == 2).then_some(new)
    });
    let new_id = s(&replacement["id"]);
    assert_eq!(replacement["zone"], "a", "replaced in the victim's zone");
    // What the page shows is what `up` says.
    assert_eq!(up.instance(&new_id)["lifecycle"], "InService");
    assert!(up.in_service().iter().all(|(id, _, _)| *id != victim));
    let activity = page.wait_for("both activities", PAGE_WAIT, |p| {
        let a = p.activity();
        let described = |needle: &str| a.iter().any(|a| s(&a["description"]).contains(needle));
        (described(&format!("Terminating instance {victim}"))
            && described(&format!("Launching a new instance: {new_id}")))
        .then_some(a)
    });
    assert!(
        s(&activity[0]["description"]).contains(&new_id)
            || s(&activity[0]["description"]).contains(&victim),
        "newest first: {activity:?}"
    );

    // A page opened now shows the last minutes at once: the victim's target is in its
    // charts only through the history the server kept. The token stays for the tab.
    let samples_before = page.history_samples();
    page.reload();
    page.wait_for("the history in the reloaded page", PAGE_WAIT, |p| {
        let legend = p.legend("#legend-new");
        (legend.get(&victim_target).map(String::as_str) == Some("gone")).then_some(())
    });
    let drawn_samples = page.eval("return document.getElementById('chart-new').dataset.samples;");
    assert!(
        s(&drawn_samples).parse::<usize>().unwrap() >= samples_before,
        "{drawn_samples} samples drawn, {samples_before} kept"
    );
    page.wait_for("admin mode after the reload", PAGE_WAIT, |p| {
        (p.text("#mode") == "Admin").then_some(())
    });
    if updating_screenshot() {
        page.wait_for_history(samples_before + 40);
    }

    // The charts: both live targets with a rate, lines drawn.
    let new_target = s(&replacement["address"]);
    page.wait_for("the replacement in the chart", PAGE_WAIT, |p| {
        let legend = p.legend("#legend-new");
        let value = legend.get(&new_target)?;
        (value != "gone" && value != "0.0/s").then_some(())
    });
    assert!(page.legend("#legend-active").contains_key(&new_target));
    // Lines are drawn in colour; the grid and labels are grey.
    let drawn = page.eval(
        "const c = document.getElementById('chart-new');
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let n = 0;
         for (let i = 0; i < d.length; i += 4) {
           if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 80) n++;
         }
         return n;",
    );
    println!("console test: {drawn} coloured pixels in the new-flows chart");
    assert!(
        drawn.as_u64().unwrap() > 200,
        "coloured chart pixels: {drawn}"
    );
    // Everything the page loaded came from the admin address.
    let foreign = page.eval(
        "return performance.getEntriesByType('resource')
           .map(e => e.name).filter(n => !n.startsWith(location.origin));",
    );
    assert_eq!(foreign, json!([]));

    // The README's picture: the fleet after the replacement.
    page.save_screenshot();

    // Scale out and back in through the group's form.
    for desired in [3, 2] {
        page.type_into("#groups [data-group='g'] input", &desired.to_string());
        page.click("#groups [data-group='g'] button");
        page.wait_for(
            &format!("{desired} in service"),
            Duration::from_secs(60),
            |p| {
                let i = p.instances();
                let healthy = p
                    .targets()
                    .iter()
                    .filter(|t| t["health"] == "Healthy")
                    .count();
                (i.len() == desired
                    && i.iter().all(|i| i["lifecycle"] == "InService")
                    && healthy == desired)
                    .then_some(())
            },
        );
        let notice = page.text("#notice-text");
        assert_eq!(
            notice,
            format!("Group g: desired capacity set to {desired}.")
        );
        assert_eq!(up.status()["groups"][0]["desired"], desired);
    }

    drop(page);
    let report = traffic.stop();
    println!(
        "console test: {} requests through the balancer; {:.1} s in all",
        report,
        started.elapsed().as_secs_f64()
    );
}

/// A stack with `admin.read_requires_token`: the page loads (opened by name, `localhost`,
/// which the API's Host check admits), shows nothing and asks for the token; with it, the
/// event stream (token in its URL, as EventSource needs) shows the fleet; Lock locks it again.
#[test]
fn the_console_of_a_locked_stack_asks_for_the_token_then_shows_the_fleet() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        return;
    };
    let stack = format!(
        "admin:\n  read_requires_token: true\n{}",
        proxy_stack(72, 1, 1, 1)
    );
    let up = Up::start(Some(&stack));
    let admin: SocketAddr = std::fs::read_to_string(up.dir().join("admin.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let page = Page::open(
        &chromium,
        &chromedriver,
        &format!("http://localhost:{}/", admin.port()),
    );
    page.wait_for("the locked page", PAGE_WAIT, |p| {
        (p.text("#conn-text").contains("Locked")
            && p.text("#notice-text").contains("read_requires_token"))
        .then_some(())
    });
    assert!(page.targets().is_empty(), "no data without the token");
    let token = std::fs::read_to_string(up.dir().join("admin.token")).unwrap();
    page.type_into("#token-input", token.trim());
    page.click("#token-use");
    page.wait_for("the fleet, live", PAGE_WAIT, |p| {
        let healthy = p.targets().iter().any(|t| t["health"] == "Healthy");
        (p.text("#mode") == "Admin" && p.text("#conn-text").starts_with("Live") && healthy)
            .then_some(())
    });
    page.click("#token-forget");
    page.wait_for("locked again", PAGE_WAIT, |p| {
        p.text("#conn-text").contains("Locked").then_some(())
    });
    assert!(
        !page.text("body").contains(token.trim()),
        "the token is never shown"
    );
}

/// Chromium and chromedriver, installed from Debian's packages if needed and possible.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let find = || Some((which("chromium")?, which("chromedriver")?));
    if let Some(found) = find() {
        return Some(found);
    }
    let apt_get = which("apt-get").is_some();
    if !root() || !apt_get {
        eprintln!(
            "SKIPPED: the console test needs chromium and chromedriver (Debian: apt-get install \
             chromium chromium-driver) and cannot install them (root: {}, apt-get: {apt_get})",
            root()
        );
        return None;
    }
    eprintln!("console test: installing chromium and chromium-driver with apt-get");
    let apt = |args: &[&str]| {
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        let mut child = Owned::spawn_with_env("apt-get", args, &env);
        let status = child.wait_exit(Duration::from_secs(900));
        (status.success(), child.stderr().join("\n"))
    };
    let install = ["install", "-y", "-qq", "--no-install-recommends"];
    let install = [&install[..], &["chromium", "chromium-driver"]].concat();
    // The package lists may be missing or stale: update them once if the install fails.
    let (mut ok, mut err) = apt(&install);
    if !ok {
        apt(&["update", "-qq"]);
        (ok, err) = apt(&install);
    }
    if !ok {
        eprintln!("SKIPPED: cannot install chromium and chromium-driver: {err}");
        return None;
    }
    find()
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A page in headless Chromium, driven through chromedriver. Both processes are owned:
/// killed and reaped on drop, also when the test fails.
struct Page {
    client: Option<Client>,
    runtime: tokio::runtime::Runtime,
    _chromedriver: Owned,
    _chromium: Owned,
    _profile: tempfile::TempDir,
}

impl Page {
    fn open(chromium: &Path, chromedriver: &Path, url: &str) -> Page {
        let profile = tempfile::tempdir().unwrap();
        let profile_arg = format!("--user-data-dir={}", profile.path().display());
        let mut args = vec![
            "--headless",
            "--remote-debugging-port=0",
            profile_arg.as_str(),
            "--window-size=1440,1450",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // Nothing but the page: no updates, sync or other calls home.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--lang=en-US",
        ];
        if root() {
            // Chromium's sandbox refuses to run as root.
            args.push("--no-sandbox");
        }
        args.push("about:blank");
        let mut chromium = Owned::spawn(chromium, &args);
        let debugger = Self::wait_line(&mut chromium, "DevTools listening on ws://", true)
            .split('/')
            .next()
            .unwrap()
            .to_string();
        // chromedriver picks a free IPv4 port and then binds the same one on IPv6, which can
        // be taken there: it exits with "bind() failed" (seen once in CI). A new try picks
        // another port.
        let (chromedriver, port) = (0..3)
            .find_map(|_| {
                let mut driver = Owned::spawn(chromedriver, &["--port=0"]);
                let port = Self::try_line(
                    &mut driver,
                    "ChromeDriver was started successfully on port ",
                )?;
                Some((driver, port.trim_end_matches('.').to_string()))
            })
            .expect("chromedriver started (three tries)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "debuggerAddress": debugger }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = runtime
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a WebDriver session");
        runtime
            .block_on(client.goto(url))
            .expect("the console loads");
        Page {
            client: Some(client),
            runtime,
            _chromedriver: chromedriver,
            _chromium: chromium,
            _profile: profile,
        }
    }

    /// What follows `prefix` on the first stdout line that has it; `None` if the child
    /// exits first.
    fn try_line(child: &mut Owned, prefix: &str) -> Option<String> {
        testkit::wait::until(prefix, Duration::from_secs(30), || {
            let found = child
                .stdout()
                .iter()
                .find_map(|l| Some(l.split_once(prefix)?.1.to_string()));
            match found {
                Some(line) => Some(Some(line)),
                None if child.has_exited() => Some(None),
                None => None,
            }
        })
    }

    /// What follows `prefix` on the first stdout (or stderr) line that has it.
    fn wait_line(child: &mut Owned, prefix: &str, stderr: bool) -> String {
        testkit::wait::until(prefix, Duration::from_secs(30), || {
            assert!(!child.has_exited(), "exited: {:?}", child.stderr());
            let lines = if stderr {
                child.stderr()
            } else {
                child.stdout()
            };
            lines
                .iter()
                .find_map(|l| Some(l.split_once(prefix)?.1.to_string()))
        })
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    fn eval(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `probe` against the page until it answers; on time-out, fails with what the
    /// page shows.
    fn wait_for<T>(&self, what: &str, limit: Duration, probe: impl Fn(&Page) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "the page never showed {what} within {limit:?}; it shows:\n{}",
                    self.text("body")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn reload(&self) {
        self.runtime
            .block_on(self.client().refresh())
            .expect("the page reloads");
    }

    /// How many samples the server's history holds (asked from the page, as it would).
    fn history_samples(&self) -> usize {
        let n = self
            .eval("return fetch('/api/history').then(r => r.json()).then(h => h.samples.length);");
        n.as_u64().expect("a count") as usize
    }

    /// Waits until the server holds `n` samples (seconds) of history.
    fn wait_for_history(&self, n: usize) {
        let limit = Duration::from_secs(n as u64 + 30);
        self.wait_for(&format!("{n} s of history"), limit, |p| {
            (p.history_samples() >= n).then_some(())
        });
    }

    fn text(&self, css: &str) -> String {
        let found = self.runtime.block_on(self.client().find(Locator::Css(css)));
        match found {
            Ok(e) => self.runtime.block_on(e.text()).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn click(&self, css: &str) {
        let element = self
            .runtime
            .block_on(self.client().find(Locator::Css(css)))
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        self.runtime
            .block_on(element.click())
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self
            .runtime
            .block_on(self.client().find(Locator::Css(css)))
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        // Select all and type over it in one go, keeping the focus: `clear()` blurs the
        // field, and a live tick landing before the typing would put the group's desired
        // value back into it (the page refills a field that is neither focused nor edited).
        let keys = format!("\u{E009}a\u{E000}{text}");
        self.runtime.block_on(element.send_keys(&keys)).unwrap();
    }

    /// A table's rows as the operator reads them: each cell's visible text.
    fn rows(&self, table: &str) -> Vec<Vec<String>> {
        let script = format!(
            "return [...document.querySelectorAll('#{table} tbody tr')]
               .map(r => [...r.cells].map(c => c.innerText.trim()));"
        );
        serde_json::from_value(self.eval(&script)).unwrap()
    }

    /// Targets: id, health, and one "HEALTH\nREASON" per node.
    fn targets(&self) -> Vec<Value> {
        self.rows("targets")
            .into_iter()
            .map(|r| {
                let nodes = &r[4..r.len() - 3];
                json!({"id": r[0], "health": r[3], "nodes": nodes})
            })
            .collect()
    }

    fn instances(&self) -> Vec<Value> {
        self.rows("instances")
            .into_iter()
            .map(|r| {
                json!({"id": r[0], "zone": r[2], "address": r[3], "lifecycle": r[4],
                       "health": r[5].lines().next().unwrap_or(""), "uptime": r[6],
                       "pid": r[7]})
            })
            .collect()
    }

    fn activity(&self) -> Vec<Value> {
        self.rows("activity")
            .into_iter()
            .map(|r| json!({"status": r[0], "description": r[1]}))
            .collect()
    }

    fn terminate_buttons_disabled(&self) -> bool {
        let v = self.eval(
            "const b = [...document.querySelectorAll('#instances button.terminate')];
             return b.length > 0 && b.every(x => x.disabled);",
        );
        v == json!(true)
    }

    /// A chart's legend: series label -> the value shown.
    fn legend(&self, css: &str) -> std::collections::BTreeMap<String, String> {
        let script = format!(
            "return [...document.querySelectorAll('{css} .key')]
               .map(k => [k.dataset.series, k.querySelector('.value').innerText]);"
        );
        let pairs: Vec<(String, String)> = serde_json::from_value(self.eval(&script)).unwrap();
        pairs.into_iter().collect()
    }

    fn save_screenshot(&self) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
        std::fs::write(&tmp, &png).unwrap();
        println!("console test: screenshot in {}", tmp.display());
        if std::env::var_os("PROXYFLEET_UPDATE_SCREENSHOT").is_some() {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console.png");
            std::fs::write(&docs, &png).unwrap();
            println!("console test: screenshot in {}", docs.display());
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // End the session politely; the processes are killed right after anyway.
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
    }
}

/// Light traffic through the balancer: a request on a new connection every 100 ms from
/// rotating app-network addresses, and four idle connections held open (re-opened when the
/// balancer closes them), so both charts have something to show.
struct Traffic {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<u64>>,
}

impl Traffic {
    fn start(nodes: Vec<SocketAddr>, url: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let worker = std::thread::spawn(move || {
            let request =
                format!("GET {url} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
            let mut held: Vec<Option<TcpStream>> = (0..4).map(|_| None).collect();
            let mut ok = 0u64;
            let mut n = 0usize;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let source = format!("127.71.20.{}", 10 + n % 40);
                let node = nodes[n % nodes.len()];
                if let Some(mut c) = connect(&source, node) {
                    let mut answer = Vec::new();
                    if c.write_all(request.as_bytes()).is_ok()
                        && c.read_to_end(&mut answer).is_ok()
                        && answer.starts_with(b"HTTP/1.1 200")
                    {
                        ok += 1;
                    }
                }
                for (i, slot) in held.iter_mut().enumerate() {
                    if slot.as_ref().is_none_or(closed) {
                        *slot = connect(&format!("127.71.20.{}", 60 + i), nodes[i % 2]);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        Traffic {
            stop,
            worker: Some(worker),
        }
    }

    /// Stops; how many requests succeeded.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.worker.take().unwrap().join().unwrap()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn connect(source: &str, target: SocketAddr) -> Option<TcpStream> {
    let source: IpAddr = source.parse().ok()?;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&SocketAddr::new(source, 0).into()).ok()?;
    socket
        .connect_timeout(&target.into(), Duration::from_secs(2))
        .ok()?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(stream)
}

/// Whether the peer has closed `stream` (without waiting).
fn closed(stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut byte = [0u8; 1];
    let gone = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    gone
}
