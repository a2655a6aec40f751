//! The state directory's SQLite database: instances and the activity history, which survive
//! a restart of `up` (and a crash: every change is committed before it is acted on).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{now, Activity, ActivityStatus, Instance, InstanceHealth, Lifecycle};

#[derive(Debug, thiserror::Error)]
#[error("state database {path}: {source}")]
pub struct StoreError {
    pub path: String,
    pub source: rusqlite::Error,
}

pub struct Store {
    db: Mutex<Connection>,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    zone TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    lifecycle TEXT NOT NULL,
    launched_at REAL NOT NULL,
    dir TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    description TEXT NOT NULL,
    cause TEXT NOT NULL,
    status TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    desired INTEGER NOT NULL
);
";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let db = Connection::open(path).map_err(err)?;
        // WAL: readers (status) never wait for the controller's writes.
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        db.execute_batch(SCHEMA).map_err(err)?;
        Ok(Store {
            db: Mutex::new(db),
            path: path.display().to_string(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&db).map_err(|source| StoreError {
            path: self.path.clone(),
            source,
        })
    }

    pub fn save_instance(&self, i: &Instance) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO instances (id, grp, zone, address, port, pid, start_ticks, lifecycle, launched_at, dir)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(id) DO UPDATE SET pid = ?6, start_ticks = ?7, lifecycle = ?8",
                params![
                    i.id,
                    i.group,
                    i.zone,
                    i.address.to_string(),
                    i.port,
                    i.pid,
                    i.start_ticks as i64,
                    i.lifecycle.as_str(),
                    i.launched_at,
                    i.dir
                ],
            )
            .map(|_| ())
        })
    }

    /// Instances not yet Terminated (what a restarted controller must adopt or replace).
    pub fn live_instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT id, grp, zone, address, port, pid, start_ticks, lifecycle, launched_at, dir
                 FROM instances WHERE lifecycle != 'Terminated' ORDER BY launched_at",
            )?;
            let rows = stmt.query_map([], |r| {
                let address: String = r.get(3)?;
                let lifecycle: String = r.get(7)?;
                Ok(Instance {
                    id: r.get(0)?,
                    group: r.get(1)?,
                    zone: r.get(2)?,
                    address: address.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    port: r.get(4)?,
                    pid: r.get(5)?,
                    start_ticks: r.get::<_, i64>(6)? as u64,
                    lifecycle: Lifecycle::parse(&lifecycle).unwrap_or(Lifecycle::Terminated),
                    health: InstanceHealth::Healthy,
                    reason: None,
                    launched_at: r.get(8)?,
                    dir: r.get(9)?,
                    protected: false,
                })
            })?;
            rows.collect()
        })
    }

    pub fn desired(&self, group: &str) -> Result<Option<u32>, StoreError> {
        self.with(|db| {
            db.query_row("SELECT desired FROM groups WHERE name = ?1", [group], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    pub fn set_desired(&self, group: &str, desired: u32) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO groups (name, desired) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET desired = ?2",
                params![group, desired],
            )
            .map(|_| ())
        })
    }

    /// Starts an activity; returns its id.
    pub fn begin(&self, group: &str, description: &str, cause: &str) -> Result<i64, StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO activities (grp, description, cause, status, start) VALUES (?1, ?2, ?3, 'InProgress', ?4)",
                params![group, description, cause, now()],
            )?;
            Ok(db.last_insert_rowid())
        })
    }

    /// Moves an activity on; a final status also sets its end time.
    pub fn update(
        &self,
        id: i64,
        status: ActivityStatus,
        description: Option<&str>,
    ) -> Result<(), StoreError> {
        let end = matches!(
            status,
            ActivityStatus::Successful | ActivityStatus::Failed | ActivityStatus::Cancelled
        )
        .then(now);
        self.with(|db| {
            db.execute(
                "UPDATE activities SET status = ?2, end = COALESCE(?3, end), description = COALESCE(?4, description) WHERE id = ?1",
                params![id, status.as_str(), end, description],
            )
            .map(|_| ())
        })
    }

    /// A finished activity in one step.
    pub fn record(
        &self,
        group: &str,
        description: &str,
        cause: &str,
        status: ActivityStatus,
    ) -> Result<i64, StoreError> {
        let id = self.begin(group, description, cause)?;
        self.update(id, status, None)?;
        Ok(id)
    }

    /// The newest `limit` activities, newest first.
    pub fn activities(
        &self,
        group: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Activity>, StoreError> {
        self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT id, grp, description, cause, status, start, end FROM activities
                 WHERE (?1 IS NULL OR grp = ?1) ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![group, limit as i64], |r| {
                let status: String = r.get(4)?;
                Ok(Activity {
                    id: r.get(0)?,
                    group: r.get(1)?,
                    description: r.get(2)?,
                    cause: r.get(3)?,
                    status: ActivityStatus::parse(&status).unwrap_or(ActivityStatus::Failed),
                    start: r.get(5)?,
                    end: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Activities left InProgress by a controller that died: they will never finish.
    pub fn cancel_unfinished(&self) -> Result<usize, StoreError> {
        self.with(|db| {
            db.execute(
                "UPDATE activities SET status = 'Cancelled', end = ?1 WHERE status IN ('InProgress', 'WaitingForConnectionDraining')",
                [now()],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_and_activities_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            let i = Instance {
                id: "i-1".into(),
                group: "g".into(),
                zone: "a".into(),
                address: "127.10.1.11".parse().unwrap(),
                port: 3128,
                pid: 42,
                start_ticks: 7,
                lifecycle: Lifecycle::InService,
                health: InstanceHealth::Healthy,
                reason: None,
                launched_at: 1.0,
                dir: "/tmp/i-1".into(),
                protected: false,
            };
            store.save_instance(&i).unwrap();
            let a = store
                .begin("g", "Launching a new instance: i-1", "desired 1, had 0")
                .unwrap();
            store.update(a, ActivityStatus::Successful, None).unwrap();
            store.begin("g", "Terminating i-0", "scale in").unwrap();
            store.set_desired("g", 3).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let live = store.live_instances().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(
            (live[0].pid, live[0].start_ticks, live[0].lifecycle),
            (42, 7, Lifecycle::InService)
        );
        assert_eq!(store.desired("g").unwrap(), Some(3));
        assert_eq!(store.cancel_unfinished().unwrap(), 1);
        let acts = store.activities(Some("g"), 10).unwrap();
        assert_eq!(acts[0].status, ActivityStatus::Cancelled, "newest first");
        assert_eq!(acts[1].status, ActivityStatus::Successful);
        assert!(acts[1].end.is_some());
    }
}
