//! The access log in Squid's native format, one line per transaction:
//! `%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt`.
//!
//! Lines are formatted on the connection's task and written by one thread per file, which
//! flushes whenever it has nothing more queued: cheap under load, prompt when idle.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::acl::{AclList, Facts};
use crate::config::AccessLog;

/// Lines queued per file before transactions wait for the writer.
const QUEUE: usize = 16 * 1024;

/// One transaction's log record.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub start: SystemTime,
    pub elapsed: Duration,
    pub client: IpAddr,
    /// `%Ss`: TCP_MISS, TCP_DENIED, TCP_TUNNEL, NONE_NONE, ...
    pub squid_status: &'static str,
    /// `%>Hs`: the status sent to the client, 0 when none was.
    pub http_status: u16,
    /// `%<st`: bytes sent to the client, head included.
    pub bytes: u64,
    pub method: String,
    pub url: String,
    /// `%Sh`: HIER_DIRECT when an origin was contacted, else HIER_NONE.
    pub hierarchy: &'static str,
    /// `%<a`: the origin's address.
    pub server: Option<IpAddr>,
    /// `%mt`: the reply's media type without parameters.
    pub mime: Option<String>,
}

impl LogEntry {
    pub fn format(&self) -> String {
        let since = self.start.duration_since(UNIX_EPOCH).unwrap_or_default();
        let server = self
            .server
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let mime = self
            .mime
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or("-");
        let method = if self.method.is_empty() {
            "-"
        } else {
            &self.method
        };
        format!(
            "{}.{:03} {:>6} {} {}/{:03} {} {} {} - {}/{} {}\n",
            since.as_secs(),
            since.subsec_millis(),
            self.elapsed.as_millis(),
            self.client,
            self.squid_status,
            self.http_status,
            self.bytes,
            method,
            self.url,
            self.hierarchy,
            server,
            mime
        )
    }
}

/// `%mt` from a Content-Type value: the media type, parameters dropped (as Squid logs it).
pub fn media_type(content_type: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(content_type).ok()?;
    let mt = text.split(';').next()?.trim();
    (!mt.is_empty()).then(|| mt.to_string())
}

enum Message {
    Line(String),
    /// Write out everything queued before this, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Close and reopen the file (after logrotate moved it: Squid's `-k rotate`).
    Reopen,
}

struct Target {
    acls: AclList,
    tx: mpsc::Sender<Message>,
}

/// Every configured access log. Dropping it (after the last transaction) lets the writers
/// flush and stop; [`AccessLogger::close`] waits for that.
pub struct AccessLogger {
    targets: Vec<Target>,
    writers: Vec<JoinHandle<()>>,
}

/// An access log file that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open access log {path} (configured at {location}): {source}")]
pub struct OpenError {
    pub path: PathBuf,
    pub location: String,
    pub source: std::io::Error,
}

impl AccessLogger {
    pub fn open(logs: &[AccessLog]) -> Result<AccessLogger, OpenError> {
        let mut targets = Vec::new();
        let mut writers = Vec::new();
        for log in logs {
            let file = open_append(&log.path).map_err(|source| OpenError {
                path: log.path.clone(),
                location: log.location.to_string(),
                source,
            })?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let name = format!("access-log {}", log.path.display());
            let path = log.path.clone();
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || write_lines(path, file, rx))
                .map_err(|source| OpenError {
                    path: log.path.clone(),
                    location: log.location.to_string(),
                    source,
                })?;
            targets.push(Target {
                acls: log.acls.clone(),
                tx,
            });
            writers.push(handle);
        }
        Ok(AccessLogger { targets, writers })
    }

    pub fn is_enabled(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Queues the entry for every log whose ACLs match the transaction.
    pub async fn log(&self, facts: &Facts<'_>, entry: &LogEntry) {
        if self.targets.is_empty() {
            return;
        }
        let line = entry.format();
        for target in &self.targets {
            if target.acls.matches(facts) {
                // Fails only when the writer thread died; the error was reported there.
                let _ = target.tx.send(Message::Line(line.clone())).await;
            }
        }
    }

    /// Waits until everything queued so far is written to the files.
    pub async fn flush(&self) {
        for target in &self.targets {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if target.tx.send(Message::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

impl AccessLogger {
    /// Reopens every log file, so a rotated file is released and a new one started.
    pub async fn reopen(&self) {
        for target in &self.targets {
            let _ = target.tx.send(Message::Reopen).await;
        }
        self.flush().await;
    }
}

impl Drop for AccessLogger {
    fn drop(&mut self) {
        self.targets.clear();
        for w in self.writers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A new log is created 0640 whatever the umask: it says who visited what, which is for
/// its owner and the owner's group (a log shipper), not for everyone on the host. An
/// existing file's mode is left as it is, as Squid does: whoever made it (logrotate's
/// `create 0640 proxy adm`, an operator) chose it.
fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn write_lines(path: PathBuf, file: File, mut rx: mpsc::Receiver<Message>) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut waiting = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut result = Ok(());
        // Drain what is queued, then flush once.
        while let Some(message) = next {
            match message {
                Message::Line(line) => result = result.and_then(|_| out.write_all(line.as_bytes())),
                Message::Flush(done) => waiting.push(done),
                Message::Reopen => {
                    let _ = out.flush();
                    match open_append(&path) {
                        Ok(file) => out = BufWriter::with_capacity(64 * 1024, file),
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "cannot reopen the access log: still writing to the old file")
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = result.and_then(|_| out.flush()) {
            tracing::error!(error = %e, "access log write failed");
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        // Let lines gather before the next batch: a writer parked in `blocking_recv` is woken
        // (a futex wake, a context switch) by every single line, which under load cost the
        // proxy ~4 % of the machine's CPU in a profile; a sleeping one is woken by none.
        // Lines reach the file at most this late; the queue holds far more than arrives.
        std::thread::sleep(BATCH_PAUSE);
    }
    let _ = out.flush();
}

/// How long the writer lets lines gather between batches.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_squid() {
        let entry = LogEntry {
            start: UNIX_EPOCH + Duration::from_millis(1_795_596_876_783),
            elapsed: Duration::from_millis(2),
            client: "127.20.0.5".parse().unwrap(),
            squid_status: "TCP_MISS",
            http_status: 200,
            bytes: 794,
            method: "GET".into(),
            url: "http://127.30.0.10:8080/".into(),
            hierarchy: "HIER_DIRECT",
            server: Some("127.30.0.10".parse().unwrap()),
            mime: media_type(b"text/html; charset=utf-8"),
        };
        // The same transaction as Squid 5.7 logged it.
        assert_eq!(
            entry.format(),
            "1795596876.783      2 127.20.0.5 TCP_MISS/200 794 GET http://127.30.0.10:8080/ - HIER_DIRECT/127.30.0.10 text/html\n"
        );
    }

    #[test]
    fn no_status_and_no_server_use_squid_placeholders() {
        let entry = LogEntry {
            start: UNIX_EPOCH,
            elapsed: Duration::ZERO,
            client: "::1".parse().unwrap(),
            squid_status: "NONE_NONE",
            http_status: 0,
            bytes: 0,
            method: String::new(),
            url: "error:transaction-end-before-headers".into(),
            hierarchy: "HIER_NONE",
            server: None,
            mime: None,
        };
        assert_eq!(
            entry.format(),
            "0.000      0 ::1 NONE_NONE/000 0 - error:transaction-end-before-headers - HIER_NONE/- -\n"
        );
    }
}
