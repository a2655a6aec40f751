//! Tests of the whole pipeline: text in, `Stack` or `StackError` out. Each YAML document is
//! written one line per string, so that line N of the file is entry N of the list.

mod builtin;
mod defaults;
mod errors_balancer;
mod errors_fleet;
mod errors_network;
mod errors_yaml;
mod etcd;
mod hosts;

use std::path::Path;

use crate::{parse, Stack, StackError};

/// The lines joined into a file.
fn yaml(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn ok(lines: &[&str]) -> Stack {
    match parse(&yaml(lines), Path::new("stack.yaml")) {
        Ok(stack) => stack,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn error(lines: &[&str]) -> StackError {
    match parse(&yaml(lines), Path::new("stack.yaml")) {
        Ok(stack) => panic!("expected an error, got {stack:#?}"),
        Err(e) => e,
    }
}

/// The full message, `stack.yaml:LINE:COLUMN: OBJECT: MESSAGE`.
fn err(lines: &[&str]) -> String {
    error(lines).to_string()
}

/// Two zones, lines 1-3, for documents that need zones to refer to.
const ZONES: [&str; 3] = [
    "zones:",
    "  a: { subnet: 127.10.1.0/24 }",
    "  c: { subnet: 127.10.2.0/24 }",
];

/// `ZONES` followed by `rest` (whose first line is line 4).
fn with_zones(rest: &[&'static str]) -> Vec<&'static str> {
    ZONES.iter().chain(rest).copied().collect()
}
