//! The database itself, on the thread that owns it: the schema, the checks, the commit.
//!
//! Tables: `changes` (the log: revision, position in its batch, kind, the change as JSON),
//! `objects` (the snapshot: one row per [`Key`], its value as JSON — the same bytes an etcd
//! store keeps under that key), `meta` (the head revision, the last granted term, the lease's
//! expiry, where the log now starts). A commit writes all of them in one SQLite transaction,
//! so the log, the snapshot and the counters never disagree, even after a crash.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::watch;

use crate::change::{Change, Fence, Key, Kind, LeadershipEnd};
use crate::model::{Leadership, Revision, Snapshot, Term};
use crate::store::StoreError;
use crate::time::{Clock, UnixMillis};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    change TEXT NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// What a campaign found.
pub(super) enum Campaign {
    Elected(Leadership),
    /// Another lease is live for this much longer.
    Held(Duration),
}

pub(super) struct Db {
    conn: Connection,
    path: String,
    state: Snapshot,
    revision: Revision,
    /// The log holds every revision from here to `revision`; older ones were compacted.
    log_start: Revision,
    /// The last term ever granted (the leadership in `state` may have ended since).
    term: Term,
    /// When the lease of `state.leadership` lapses.
    lease_expires_at: UnixMillis,
    clock: Arc<dyn Clock>,
    /// How many revisions the log keeps.
    retention: u64,
    head: watch::Sender<Revision>,
    /// Each host's liveness lease and when it lapses. In memory only: after a restart of
    /// the store's process every host holds a new one (its agent is that process).
    liveness: std::collections::HashMap<String, (u64, UnixMillis)>,
    last_liveness_lease: u64,
}

impl Db {
    pub(super) fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
        retention: u64,
        head: watch::Sender<Revision>,
    ) -> Result<Db, StoreError> {
        let shown = path.display().to_string();
        let err = |source: rusqlite::Error| backend(&shown, source);
        create_private(path).map_err(|e| backend(&shown, e))?;
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL, not NORMAL: a commit that returned must survive a power cut too, or a
        // restart could grant a term (a fencing token) a second time.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let meta = |name: &str| -> Result<u64, StoreError> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.unwrap_or(0) as u64)
            .map_err(err)
        };
        let revision = Revision(meta("revision")?);
        let term = Term(meta("term")?);
        let lease_expires_at = UnixMillis(meta("lease_expires_at")?);
        let log_start = Revision(meta("log_start")?.max(1));
        let state = load(&conn, &shown)?;
        head.send_replace(revision);
        Ok(Db {
            conn,
            path: shown,
            state,
            revision,
            log_start,
            term,
            lease_expires_at,
            clock,
            retention: retention.max(1),
            head,
            liveness: Default::default(),
            last_liveness_lease: 0,
        })
    }

    pub(super) fn hold_liveness(&mut self, host: &str, ttl: Duration) -> crate::Liveness {
        self.last_liveness_lease += 1;
        let lease = self.last_liveness_lease;
        let expires = self.clock.now().after(ttl);
        self.liveness.insert(host.to_string(), (lease, expires));
        crate::Liveness {
            host: host.to_string(),
            lease,
            ttl,
        }
    }

    pub(super) fn renew_liveness(&mut self, l: &crate::Liveness) -> Result<(), StoreError> {
        let now = self.clock.now();
        match self.liveness.get_mut(&l.host) {
            Some((lease, expires)) if *lease == l.lease && *expires > now => {
                *expires = now.after(l.ttl);
                Ok(())
            }
            _ => Err(StoreError::LivenessLapsed {
                host: l.host.clone(),
            }),
        }
    }

    pub(super) fn live_hosts(&self) -> std::collections::BTreeSet<String> {
        let now = self.clock.now();
        self.liveness
            .iter()
            .filter(|(_, (_, expires))| *expires > now)
            .map(|(h, _)| h.clone())
            .collect()
    }

    pub(super) fn snapshot(&self) -> (Snapshot, Revision) {
        (self.state.clone(), self.revision)
    }

    pub(super) fn apply(
        &mut self,
        fence: Fence,
        changes: Vec<Change>,
    ) -> Result<Revision, StoreError> {
        if let Fence::Leader(term) = fence {
            self.check_fence(term)?;
        }
        crate::store::check_batch(fence, &changes)?;
        if changes.is_empty() {
            return Ok(self.revision);
        }
        self.commit(&changes, &[])
    }

    pub(super) fn campaign(
        &mut self,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Campaign, StoreError> {
        let now = self.clock.now();
        if self.state.leadership.is_some() && self.lease_expires_at > now {
            return Ok(Campaign::Held(self.lease_expires_at.since(now)));
        }
        let leadership = Leadership {
            leader: candidate.to_string(),
            term: Term(self.term.0 + 1),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            elected_at: now,
        };
        let mut changes = Vec::new();
        if let Some(old) = &self.state.leadership {
            changes.push(Change::LeadershipEnded {
                term: old.term,
                end: LeadershipEnd::LeaseExpired,
            });
        }
        changes.push(Change::LeaderElected {
            leadership: leadership.clone(),
        });
        let expires = now.after(ttl);
        self.commit(
            &changes,
            &[("term", leadership.term.0), ("lease_expires_at", expires.0)],
        )?;
        self.term = leadership.term;
        self.lease_expires_at = expires;
        Ok(Campaign::Elected(leadership))
    }

    pub(super) fn renew(&mut self, leadership: &Leadership) -> Result<UnixMillis, StoreError> {
        self.check_fence(leadership.term)?;
        let expires = self
            .clock
            .now()
            .after(Duration::from_millis(leadership.ttl_ms));
        // A renewal is not a change: it writes no revision, as an etcd keep-alive does not.
        self.conn
            .execute(
                "INSERT INTO meta (name, value) VALUES ('lease_expires_at', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = ?1",
                [expires.0 as i64],
            )
            .map_err(|e| backend(&self.path, e))?;
        self.lease_expires_at = expires;
        Ok(expires)
    }

    pub(super) fn resign(&mut self, leadership: &Leadership) -> Result<(), StoreError> {
        self.check_fence(leadership.term)?;
        let ended = Change::LeadershipEnded {
            term: leadership.term,
            end: LeadershipEnd::Resigned,
        };
        self.commit(&[ended], &[])?;
        Ok(())
    }

    pub(super) fn leader(&self) -> Option<Leadership> {
        self.live().cloned()
    }

    /// Refuses a watch whose start was compacted away.
    pub(super) fn check_from(&self, from: Revision) -> Result<(), StoreError> {
        // Revision 0 is the empty store: it has no changes of its own.
        let from = from.max(Revision(1));
        if from < self.log_start {
            return Err(StoreError::Compacted {
                from,
                oldest: self.log_start,
            });
        }
        Ok(())
    }

    /// The logged changes of `kinds` in revisions `from..=to`.
    pub(super) fn read_log(
        &self,
        kinds: &[Kind],
        from: Revision,
        to: Revision,
    ) -> Result<Vec<(Revision, Change)>, StoreError> {
        self.check_from(from)?;
        let err = |e| backend(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT revision, kind, change FROM changes
                 WHERE revision >= ?1 AND revision <= ?2 ORDER BY revision, seq",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([from.0 as i64, to.0 as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (revision, kind, json) = row.map_err(err)?;
            if !Kind::parse(&kind).is_some_and(|k| kinds.contains(&k)) {
                continue;
            }
            let change = serde_json::from_str(&json)
                .map_err(|e| backend(&self.path, format!("change at revision {revision}: {e}")))?;
            out.push((Revision(revision as u64), change));
        }
        Ok(out)
    }

    /// The live leadership: the last one granted, while its lease has not lapsed.
    fn live(&self) -> Option<&Leadership> {
        self.state
            .leadership
            .as_ref()
            .filter(|_| self.lease_expires_at > self.clock.now())
    }

    fn check_fence(&self, presented: Term) -> Result<(), StoreError> {
        let current = self.live().map(|l| l.term);
        if current == Some(presented) {
            Ok(())
        } else {
            Err(StoreError::Fenced { presented, current })
        }
    }

    /// Checks the batch against the rules, then writes it as one revision: the log rows, the
    /// objects it touched, the counters; the copy in memory and the watchers follow only once
    /// SQLite committed.
    fn commit(&mut self, changes: &[Change], meta: &[(&str, u64)]) -> Result<Revision, StoreError> {
        let mut next = self.state.clone();
        next.apply_all(changes)
            .map_err(|(index, refusal)| StoreError::Refused {
                index,
                count: changes.len(),
                change: changes[index].to_string(),
                refusal,
            })?;
        let revision = self.revision.next();
        let log_start = if revision.0 >= self.log_start.0 + self.retention + self.retention / 8 {
            // Trim in steps of an eighth of the retention, not on every commit.
            Revision(revision.0 + 1 - self.retention)
        } else {
            self.log_start
        };
        let tx = self
            .conn
            .transaction()
            .map_err(|e| backend(&self.path, e))?;
        write(&tx, &next, changes, revision, log_start, meta)
            .and_then(|()| tx.commit().map_err(|e| e.to_string()))
            .map_err(|e| backend(&self.path, e))?;
        self.state = next;
        self.revision = revision;
        self.log_start = log_start;
        self.head.send_replace(revision);
        Ok(revision)
    }
}

fn write(
    tx: &Transaction<'_>,
    next: &Snapshot,
    changes: &[Change],
    revision: Revision,
    log_start: Revision,
    meta: &[(&str, u64)],
) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    let mut log = tx
        .prepare_cached("INSERT INTO changes (revision, seq, kind, change) VALUES (?1, ?2, ?3, ?4)")
        .map_err(sql)?;
    for (seq, c) in changes.iter().enumerate() {
        let json = serde_json::to_string(c).map_err(|e| format!("{c}: {e}"))?;
        log.execute(params![
            revision.0 as i64,
            seq as i64,
            c.kind().as_str(),
            json
        ])
        .map_err(sql)?;
    }
    let touched: BTreeSet<Key> = changes.iter().map(Change::key).collect();
    for key in touched {
        let path = key.to_string();
        match value(next, &key).map_err(|e| format!("{path}: {e}"))? {
            Some(json) => tx.execute(
                "INSERT INTO objects (key, kind, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = ?3",
                params![path, key.kind().as_str(), json],
            ),
            None => tx.execute("DELETE FROM objects WHERE key = ?1", [&path]),
        }
        .map_err(sql)?;
    }
    tx.execute(
        "DELETE FROM changes WHERE revision < ?1",
        [log_start.0 as i64],
    )
    .map_err(sql)?;
    let counters = [("revision", revision.0), ("log_start", log_start.0)];
    for (name, v) in counters.iter().chain(meta) {
        tx.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2",
            params![name, *v as i64],
        )
        .map_err(sql)?;
    }
    Ok(())
}

/// The object at `key` as stored, `None` if the key no longer exists.
fn value(s: &Snapshot, key: &Key) -> serde_json::Result<Option<String>> {
    match key {
        Key::Host(id) => s.hosts.get(id).map(serde_json::to_string),
        Key::Group(name) => s.groups.get(name).map(serde_json::to_string),
        Key::Instance(id) => s.instances.get(id).map(serde_json::to_string),
        Key::Target(group, addr) => s.target(group, *addr).map(serde_json::to_string),
        Key::Leadership => s.leadership.as_ref().map(serde_json::to_string),
        Key::Request(id) => s.requests.get(id).map(serde_json::to_string),
    }
    .transpose()
}

/// The snapshot from the `objects` table.
fn load(conn: &Connection, path: &str) -> Result<Snapshot, StoreError> {
    let mut stmt = conn
        .prepare("SELECT key, kind, value FROM objects")
        .map_err(|e| backend(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(|e| backend(path, e))?;
    let mut s = Snapshot::default();
    for row in rows {
        let (key, kind, json) = row.map_err(|e| backend(path, e))?;
        let bad = |e: String| backend(path, format!("object {key}: {e}"));
        match Kind::parse(&kind) {
            Some(Kind::Host) => {
                let h: crate::Host = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
                s.hosts.insert(h.id.clone(), h);
            }
            Some(Kind::Group) => {
                let g: crate::Group =
                    serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
                s.groups.insert(g.name.clone(), g);
            }
            Some(Kind::Instance) => {
                let i: crate::Instance =
                    serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
                s.instances.insert(i.id.clone(), i);
            }
            Some(Kind::Target) => {
                let t: crate::Target =
                    serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
                s.targets
                    .entry(t.target_group.clone())
                    .or_default()
                    .insert(t.address, t);
            }
            Some(Kind::Leadership) => {
                s.leadership = Some(serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?);
            }
            Some(Kind::Request) => {
                let r: crate::Request =
                    serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
                s.requests.insert(r.id.clone(), r);
            }
            None => return Err(bad(format!("unknown kind {kind:?}"))),
        }
    }
    Ok(s)
}

/// Creates the database file readable by its owner only (SQLite gives its -wal and -shm
/// files the same mode); an existing file keeps its mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn backend(path: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Backend {
        what: format!("database {path}"),
        source: source.into(),
    }
}
