//! The stack file: validation, and the reachability check and template rendering of every
//! stack that validates.

use std::path::Path;

use proxyfleet_stack::{check, parse, Placeholders, Stack, StackError};

const PATH: &str = "fuzz.yaml";

/// `check` parses the squid.conf files of launch templates with the real file system (as
/// `proxyfleet check` must): it runs only on templates that cannot read any file.
fn reads_files(stack: &Stack) -> bool {
    stack.launch_templates.iter().any(|t| {
        t.files
            .iter()
            .any(|(_, text)| text.contains("include") || text.contains('"'))
    })
}

fn check_error(e: &StackError, text: &str) {
    // YAML's line breaks: CRLF, LF, and a lone CR.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u64;
    assert_eq!(e.path(), Path::new(PATH));
    assert!(
        (1..=lines + 1).contains(&e.line()) && e.column() >= 1,
        "{e}: position outside the {lines}-line text"
    );
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = parse(text, Path::new(PATH));
    let second = parse(text, Path::new(PATH));
    let stack = match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "two parses of one text differ");
            a
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "two parses fail differently");
            check_error(&a, text);
            return;
        }
        (a, b) => panic!("parses once, fails once: {a:?} / {b:?}"),
    };
    for group in &stack.groups {
        let template = stack
            .launch_templates
            .iter()
            .find(|t| t.name == group.launch_template)
            .expect("a validated group's template exists");
        for zone in &group.zones {
            let zone = stack.zone(zone).expect("a validated group's zone exists");
            let Some(address) = group.instance_address(&zone.subnet, 0) else {
                continue;
            };
            let launch = template.render(&Placeholders {
                id: "i-fuzz".into(),
                zone: zone.name.clone(),
                address,
                port: group.port,
                dir: "/nonexistent/i-fuzz".into(),
                group: group.name.clone(),
            });
            assert_eq!(launch.files.len(), template.files.len());
        }
    }
    if !reads_files(&stack) {
        let findings = check::check(&stack);
        for f in &findings {
            assert!(!f.to_string().is_empty());
        }
    }
}
