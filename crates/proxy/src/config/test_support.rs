//! Helpers shared by the config tests: parsing snippets, temporary directories, and
//! request facts to evaluate parsed rules against.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{parse_str, Config, ConfigError};
use crate::acl::Facts;

/// The name snippets are parsed under.
pub const FILE: &str = "/etc/test.conf";

/// Parses `text` as `/etc/test.conf`, with an `http_port` appended (after the text, so line
/// numbers in the text are unchanged) when it has none.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    if text.contains("http_port") {
        parse_str(text, Path::new(FILE))
    } else {
        parse_str(&format!("{text}\nhttp_port 3128\n"), Path::new(FILE))
    }
}

pub fn parse_ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The error's display text.
pub fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Each `(TEXT, EXPECTED)`: parsing TEXT (as /etc/test.conf) fails with
/// `/etc/test.conf:EXPECTED`.
pub fn assert_errors(cases: &[(&str, &str)]) {
    for (text, expected) in cases {
        assert_eq!(
            parse_err(text),
            format!("/etc/test.conf:{expected}"),
            "{text}"
        );
    }
}

/// A directory removed (with its contents) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("proxyfleet-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` at `relative` (creating directories) and returns the full path.
    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An owned transaction description, lent out as [`Facts`].
pub struct Request {
    pub client: IpAddr,
    pub method: &'static str,
    pub scheme: &'static str,
    pub host: &'static str,
    pub port: u16,
    pub path: &'static str,
    pub dst_ips: Vec<IpAddr>,
}

impl Request {
    /// `GET http://HOST:PORT/` from `client`; an IP-literal host is its own destination.
    pub fn get(client: &str, host: &'static str, port: u16) -> Request {
        Request {
            client: client.parse().unwrap(),
            method: "GET",
            scheme: "http",
            host,
            port,
            path: "/",
            dst_ips: host.parse().into_iter().collect(),
        }
    }

    /// `CONNECT HOST:PORT` from `client`.
    pub fn connect(client: &str, host: &'static str, port: u16) -> Request {
        Request {
            method: "CONNECT",
            scheme: "",
            path: "",
            ..Request::get(client, host, port)
        }
    }

    pub fn facts(&self) -> Facts<'_> {
        Facts {
            client: self.client,
            method: self.method,
            scheme: self.scheme,
            host: self.host,
            port: self.port,
            path: self.path,
            dst_ips: &self.dst_ips,
            ..Facts::connection(std::net::Ipv4Addr::UNSPECIFIED.into())
        }
    }
}
