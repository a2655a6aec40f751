//! The stack file: one YAML file declaring zones and their subnets, named networks, security
//! groups, load balancers with listeners, target groups, launch templates and groups — read
//! into a validated [`Stack`], or refused with one error naming file, line, column and object:
//!
//! ```text
//! stack.yaml:31:14: groups.proxies: min 3 > desired 2
//! ```
//!
//! Data flows through the modules in one direction:
//!
//! - `raw`: file text → serde structs (serde-saphyr, `deny_unknown_fields`), every
//!   scalar wrapped in `serde_saphyr::Spanned` so that it keeps its line and column; YAML and
//!   schema errors come out of serde-saphyr with their position, and `raw` records which
//!   object they arose in;
//! - `validate` (`network`, `balancer`, `fleet`): raw structs → the model, resolving names
//!   (zones, networks, `sg:`/`lb:` sources), filling defaults and checking every rule;
//! - `model`: the validated [`Stack`]; load balancers and target groups are
//!   `proxyfleet_lb::spec` types, ready for the load balancer;
//! - `render`: launch template placeholders (`{id}`, `{address}`, ...), checked during
//!   validation and filled in per instance by [`render`];
//! - `error`: [`StackError`];
//! - [`budget`]: the file descriptors a stack's balancer needs, and clamping to a limit;
//! - `admin`: the `admin:` section ([`Admin`]), and [`redact_environment`], the stack
//!   file's text with launch templates' environment values hidden, for the admin API;
//! - `etcd`: the `etcd:` section ([`Etcd`]): the cluster the roles share, when they run as
//!   separate agents;
//! - [`plan`]: what changing a running tier from one stack to another costs, object by
//!   object (`proxyfleet diff` and `apply`);
//! - `hosts`: the `hosts:` and `dns:` sections ([`HostSpec`], [`Dns`]): a tier across hosts,
//!   and its health-checked DNS name.
//!
//! [`BUILTIN`] is the stack `proxyfleet up` runs without a file: the reference system of
//! DESIGN.md on loopback addresses.

mod admin;
pub mod budget;
pub mod check;
mod error;
mod etcd;
mod hosts;
mod model;
pub mod plan;
mod raw;
mod render;
mod validate;

use std::path::Path;

use proxyfleet_proxy::config::read_bounded;
use serde_saphyr::MessageFormatter;

pub use proxyfleet_proxy::config::MAX_STACK_FILE_BYTES;

pub use admin::{redact_environment, Admin, REDACTED};
pub use error::StackError;
pub use etcd::{Etcd, DEFAULT_PREFIX as DEFAULT_ETCD_PREFIX};
pub use hosts::{Dns, HostSpec, DEFAULT_DNS_PORT};
pub use model::{
    host_address, Group, HealthCheckType, IngressRule, Launch, LaunchTemplate, Protocol, Scaling,
    SecurityGroup, Source, Stack, Zone,
};
pub use render::{render, Placeholders, PLACEHOLDER_NAMES};

use error::Pos;

/// The built-in stack (also what `proxyfleet example` prints).
pub const BUILTIN: &str = include_str!("../builtin.yaml");

/// The name the built-in stack has in messages.
pub const BUILTIN_NAME: &str = "<builtin>";

/// The built-in stack, validated.
pub fn builtin() -> Stack {
    parse(BUILTIN, Path::new(BUILTIN_NAME)).expect("the built-in stack is valid (tested)")
}

/// Reads and validates the stack file at `path`: only a regular file, at most
/// [`MAX_STACK_FILE_BYTES`] (4 MiB), so `check` and `up` finish in bounded time and memory
/// whatever the name points at (`/dev/zero`, a FIFO).
pub fn load(path: &Path) -> Result<Stack, StackError> {
    let read_error = |source| StackError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_bounded(path, MAX_STACK_FILE_BYTES).map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({})", e.utf8_error()),
        ))
    })?;
    parse(&text, path)
}

/// Validates a stack file's text; `path_for_messages` is the file name errors show.
pub fn parse(text: &str, path_for_messages: &Path) -> Result<Stack, StackError> {
    raw::reset_failure();
    let raw: raw::RawStack =
        serde_saphyr::from_str(text).map_err(|e| yaml_error(path_for_messages, &e))?;
    let ctx = validate::Ctx {
        path: path_for_messages,
        text,
    };
    validate::validate(&raw, &ctx)
}

/// A YAML syntax or schema error (unknown key, wrong type, missing key) at serde-saphyr's
/// position, in the object `raw` saw it arise in.
fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> StackError {
    let at = e.location().map_or(Pos { line: 1, column: 1 }, Pos::of);
    let object = raw::failed_in().unwrap_or_else(|| "stack".to_string());
    let message = serde_saphyr::UserMessageFormatter.format_message(e.without_snippet());
    // Every number in the schema is read as u64; say what was wanted in words.
    let message = if message == "invalid u64" {
        "expected a whole number (0 or more)".to_string()
    } else {
        message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    StackError::invalid(path, at, &object, message)
}

#[cfg(test)]
mod tests;
