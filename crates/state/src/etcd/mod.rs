//! The etcd implementation of [`StateStore`], for a tier whose roles run on several hosts.
//!
//! **Why the JSON gateway, not the `etcd-client` crate.** `etcd-client` generates its gRPC
//! code with `protoc` at build time, and proxyfleet must build on a machine with only the
//! Rust toolchain (the README's two commands) and keep CI short on two cores; tonic and prost
//! would add both a system tool and a large build. etcd serves the same API as JSON over
//! HTTP/1.1 (its documented gRPC gateway, `/v3/...`), which hyper — already here — speaks. The
//! few calls used (range, txn, watch, lease grant/keep-alive/revoke, maintenance status) are
//! in [`client`] and [`wire`].
//!
//! **Layout**, every key under the stack's prefix (default `/proxyfleet/`):
//! - `snapshot`: the whole [`Snapshot`] as JSON (a few KB for a tier: hosts, groups,
//!   instances, targets). Each [`apply`](StateStore::apply) reads it, applies the batch with
//!   [`Snapshot::apply_all`] (the same rules as every store), and writes it back in one
//!   transaction that compares its `mod_revision` (optimistic concurrency: a writer that lost
//!   the race reads again and retries) and, when fenced, the leader key's `create_revision`;
//! - `log/ID`: the batch itself, put in that same transaction under an id unique to the
//!   writer and the batch, on a lease that keeps it about half an hour ([`LOG_RETENTION`]): what [`watch`](StateStore::watch) streams, with the transaction's
//!   revision. The id also makes a write whose answer was lost (a member died mid-call) safe
//!   to retry: the batch is found already written and not applied twice;
//! - `alive/HOST`: the host's liveness, put on a lease of its ttl that its agent keeps alive;
//!   etcd deletes the key when the lease lapses, so whether a host is alive is etcd's verdict
//!   on its own clock (leases are extended across an etcd leader election, so an outage of
//!   etcd itself writes no host off);
//! - `leader`: the controller's leadership, put only if absent and attached to a lease of the
//!   leadership's ttl. The [`Term`] is its `create_revision`, which etcd never hands out
//!   twice. A lapsed lease deletes it, and a fenced write's compare then fails.
//!
//! Every write rewrites the snapshot (liveness renewals are lease keep-alives, not writes), which keeps the store simple and
//! every reader consistent at the price of writing a few KB per change; etcd members should
//! run with `--auto-compaction-retention` (see `deploy/etcd-member.service`). Keys per object
//! are the way to grow past a few dozen hosts.

mod client;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::change::{Change, Fence, Kind, LeadershipEnd};
use crate::model::{Leadership, Revision, Snapshot, Term};
use crate::store::{Liveness, StateStore, StoreError, WatchStream};
use crate::time::UnixMillis;
use client::{backend, Client};
use wire::{b64, prefix_end, KeyValue, RangeResponse, TxnResponse};

/// How often a write that lost a race is tried again before giving up.
const RETRIES: usize = 50;
/// How long a log entry is kept as a key: it lives on a lease of this ttl, granted anew every
/// half of it, so the keyspace holds about this much of the log (heartbeats included) rather
/// than growing forever. Older entries stay in etcd's history, which a watch from an old
/// revision still reads, until etcd compacts it.
const LOG_RETENTION: Duration = Duration::from_secs(1800);
/// How often a campaign looks at the leader key while another holds it.
const CAMPAIGN_POLL: Duration = Duration::from_millis(50);

/// One member's answer to `maintenance/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberHealth {
    pub endpoint: SocketAddr,
    pub reachable: bool,
    /// This member is the raft leader.
    pub leader: bool,
    pub revision: u64,
    pub raft_term: u64,
    pub version: String,
    /// Why it is not reachable.
    pub error: Option<String>,
}

/// The leadership's value in the `leader` key (the term is the key's create revision).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LeaderValue {
    leader: String,
    ttl_ms: u64,
    elected_at: UnixMillis,
    lease: u64,
}

pub struct EtcdStore {
    client: Client,
    prefix: String,
    /// The lease this writer's log entries live on (see [`LOG_RETENTION`]), and when it was
    /// granted.
    log_lease: tokio::sync::Mutex<Option<(u64, tokio::time::Instant)>>,
    /// This store's part of every log id: unique per process and start.
    writer: String,
    batches: AtomicU64,
}

impl EtcdStore {
    /// A store on the cluster at `endpoints` (client URLs' addresses), every key under
    /// `prefix`. Nothing is contacted yet: an agent may start while etcd is down.
    pub fn new(endpoints: Vec<SocketAddr>, prefix: &str) -> EtcdStore {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        EtcdStore {
            client: Client::new(endpoints),
            prefix: prefix.to_string(),
            log_lease: tokio::sync::Mutex::new(None),
            writer: format!("{:x}-{nanos:x}", std::process::id()),
            batches: AtomicU64::new(0),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Each member's status, all asked at once (so a silent member costs one timeout, not
    /// one per member), in endpoint order.
    pub async fn health(&self) -> Vec<MemberHealth> {
        let asks = self
            .client
            .endpoints()
            .iter()
            .map(|&endpoint| self.member_health(endpoint));
        futures_util::future::join_all(asks).await
    }

    /// One member's `maintenance/status` (answered by the member itself, leader or not).
    async fn member_health(&self, endpoint: SocketAddr) -> MemberHealth {
        let answer: Result<wire::StatusResponse, String> = self
            .client
            .call_one(endpoint, "/v3/maintenance/status", &json!({}))
            .await;
        member_health(endpoint, answer)
    }

    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, u64), StoreError> {
        let r: RangeResponse = self
            .client
            .read("/v3/kv/range", &json!({ "key": b64(key) }))
            .await?;
        Ok((r.kvs.into_iter().next(), r.header.revision))
    }

    /// The snapshot and the `mod_revision` of its key (0: none yet), at the answer's revision.
    async fn read_snapshot(&self) -> Result<(Snapshot, u64, Revision), StoreError> {
        let (kv, revision) = self.get(&self.key("snapshot")).await?;
        let Some(kv) = kv else {
            return Ok((Snapshot::default(), 0, Revision(revision)));
        };
        let snapshot = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Backend {
            what: format!("the snapshot at {}", self.key("snapshot")),
            source: Box::new(e),
        })?;
        Ok((snapshot, kv.mod_revision, Revision(revision)))
    }

    /// The live leadership's term (the leader key's create revision), if any.
    async fn current_term(&self) -> Result<Option<(Term, LeaderValue)>, StoreError> {
        let (kv, _) = self.get(&self.key("leader")).await?;
        Ok(kv.and_then(|kv| {
            let value: LeaderValue = serde_json::from_slice(&kv.value).ok()?;
            Some((Term(kv.create_revision), value))
        }))
    }

    /// Applies `changes` (checked by the caller) in one transaction; `term` fences it.
    async fn commit(
        &self,
        term: Option<Term>,
        changes: Vec<Change>,
    ) -> Result<Revision, StoreError> {
        let id = format!(
            "{}-{}",
            self.writer,
            self.batches.fetch_add(1, Ordering::Relaxed)
        );
        let log_key = self.key(&format!("log/{id}"));
        let batch = serde_json::to_vec(&changes).expect("changes serialize");
        for attempt in 0..RETRIES {
            let lease = self.log_lease().await?;
            let (mut snapshot, mod_revision, _) = self.read_snapshot().await?;
            // A retry (the snapshot moved, or a member died mid-call) whose earlier try was
            // applied after all: done. A first try's batch id is new: nothing to look up.
            if attempt > 0 {
                if let (Some(kv), _) = self.get(&log_key).await? {
                    return Ok(Revision(kv.mod_revision));
                }
            }
            snapshot
                .apply_all(&changes)
                .map_err(|(index, refusal)| StoreError::Refused {
                    index,
                    count: changes.len(),
                    change: changes[index].to_string(),
                    refusal,
                })?;
            let mut compare = vec![json!({
                "target": "MOD", "key": b64(self.key("snapshot")),
                "mod_revision": mod_revision.to_string(), "result": "EQUAL",
            })];
            if let Some(term) = term {
                compare.push(json!({
                    "target": "CREATE", "key": b64(self.key("leader")),
                    "create_revision": term.0.to_string(), "result": "EQUAL",
                }));
            }
            let value = serde_json::to_vec(&snapshot).expect("snapshot serializes");
            let txn = json!({
                "compare": compare,
                "success": [
                    { "request_put": { "key": b64(self.key("snapshot")), "value": b64(&value) } },
                    { "request_put": { "key": b64(&log_key), "value": b64(&batch), "lease": lease.to_string() } },
                ],
                "failure": [ { "request_range": { "key": b64(self.key("leader")) } } ],
            });
            let r: TxnResponse = match self.client.call("/v3/kv/txn", &txn).await {
                Ok(r) => r,
                // The log lease lapsed (this process was paused past its ttl): a new one.
                Err(e) if e.to_string().contains("lease not found") => {
                    *self.log_lease.lock().await = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if r.succeeded {
                return Ok(Revision(r.header.revision));
            }
            if let Some(term) = term {
                let leader = r
                    .responses
                    .into_iter()
                    .filter_map(|o| o.response_range)
                    .flat_map(|range| range.kvs)
                    .next();
                let current = leader.map(|kv| Term(kv.create_revision));
                if current != Some(term) {
                    return Err(StoreError::Fenced {
                        presented: term,
                        current,
                    });
                }
            }
            // Another writer got there first: read again.
        }
        Err(StoreError::Backend {
            what: "apply".to_string(),
            source: format!("the snapshot kept changing under {RETRIES} tries").into(),
        })
    }

    /// The lease for new log entries: this writer's current one, or a new one when it is
    /// half way through its ttl (or was lost).
    async fn log_lease(&self) -> Result<u64, StoreError> {
        let mut current = self.log_lease.lock().await;
        if let Some((id, granted)) = *current {
            if granted.elapsed() < LOG_RETENTION / 2 {
                return Ok(id);
            }
        }
        let grant: wire::LeaseGrantResponse = self
            .client
            .call(
                "/v3/lease/grant",
                &json!({ "TTL": LOG_RETENTION.as_secs() }),
            )
            .await?;
        if !grant.error.is_empty() || grant.id == 0 {
            return Err(backend("lease grant (log)", grant.error));
        }
        *current = Some((grant.id, tokio::time::Instant::now()));
        Ok(grant.id)
    }

    /// One keep-alive of `lease`: the ttl left after it (0: the lease is gone).
    ///
    /// Hedged: a member that has not answered within [`client::HEDGE`] is raced by the
    /// next one, and the first answer wins. A member that died silently (no RST) would
    /// otherwise hold the renewal for a whole call timeout, which is longer than the half
    /// lease after which a host fences itself; renewing twice is harmless.
    async fn lease_ttl_left(&self, lease: u64) -> Result<u64, StoreError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let body = json!({ "ID": lease.to_string() });
        let one = |i: usize, addr: SocketAddr| {
            let body = &body;
            async move {
                let ttl = async {
                    let mut lines = self
                        .client
                        .stream_one(addr, "/v3/lease/keepalive", body)
                        .await?;
                    let line = tokio::time::timeout(Duration::from_millis(1500), lines.next_line())
                        .await
                        .map_err(|_| "no answer".to_string())??
                        .ok_or_else(|| "empty answer".to_string())?;
                    let item: wire::StreamItem<wire::KeepAliveResponse> =
                        serde_json::from_slice(&line).map_err(|e| e.to_string())?;
                    if let Some(e) = item.error {
                        return Err(e.message);
                    }
                    Ok::<_, String>(item.result.map_or(0, |r| r.ttl))
                };
                ttl.await
                    .map(|t| (i, t))
                    .map_err(|e| format!("{addr}: {e}"))
            }
        };
        let mut members = self.client.ordered().into_iter();
        let mut racing = FuturesUnordered::new();
        let mut failures = Vec::new();
        loop {
            if racing.is_empty() {
                match members.next() {
                    Some((i, addr)) => racing.push(one(i, addr)),
                    None => {
                        return Err(backend(
                            "lease keep-alive",
                            format!("no etcd member answered: {}", failures.join("; ")),
                        ))
                    }
                }
            }
            tokio::select! {
                answer = racing.next() => match answer {
                    Some(Ok((i, ttl))) => {
                        self.client.prefer(i);
                        return Ok(ttl);
                    }
                    Some(Err(e)) => failures.push(e),
                    None => {}
                },
                () = tokio::time::sleep(client::HEDGE) => {
                    if let Some((i, addr)) = members.next() {
                        racing.push(one(i, addr));
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl StateStore for EtcdStore {
    async fn apply(&self, fence: Fence, changes: Vec<Change>) -> Result<Revision, StoreError> {
        crate::store::check_batch(fence, &changes)?;
        let term = match fence {
            Fence::Leader(term) => Some(term),
            Fence::Unfenced => None,
        };
        if changes.is_empty() {
            if let Some(term) = term {
                let current = self.current_term().await?.map(|(t, _)| t);
                if current != Some(term) {
                    return Err(StoreError::Fenced {
                        presented: term,
                        current,
                    });
                }
            }
            return Ok(Revision(self.read_snapshot().await?.1));
        }
        self.commit(term, changes).await
    }

    /// At the revision of the last batch (the snapshot key's `mod_revision`), not etcd's
    /// head: other keys (liveness, leadership, leases lapsing) move the head without a
    /// change of the state, and a watcher waiting for the log to reach the head would wait
    /// for the next batch.
    async fn snapshot(&self) -> Result<(Snapshot, Revision), StoreError> {
        let (snapshot, mod_revision, _) = self.read_snapshot().await?;
        Ok((snapshot, Revision(mod_revision)))
    }

    async fn watch(&self, kinds: &[Kind], from: Revision) -> Result<WatchStream, StoreError> {
        let prefix = self.key("log/");
        let request = json!({ "create_request": {
            "key": b64(&prefix),
            "range_end": b64(prefix_end(&prefix)),
            "start_revision": from.0.max(1).to_string(),
        }});
        let (member, mut lines) = self.client.stream("/v3/watch", &request).await?;
        let kinds = kinds.to_vec();
        let stream = async_stream_lines(move |tx| async move {
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(line)) => line,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(backend(
                                "watch",
                                format!("member {member} ended the watch"),
                            )))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(backend("watch", format!("member {member}: {e}"))))
                            .await;
                        return;
                    }
                };
                let item: wire::StreamItem<wire::WatchResponse> =
                    match serde_json::from_slice(&line) {
                        Ok(item) => item,
                        Err(e) => {
                            let _ = tx
                                .send(Err(backend("watch", format!("unexpected answer: {e}"))))
                                .await;
                            return;
                        }
                    };
                if let Some(e) = item.error {
                    let _ = tx.send(Err(backend("watch", e.message))).await;
                    return;
                }
                let Some(w) = item.result else { continue };
                if w.compact_revision > 0 {
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            from,
                            oldest: Revision(w.compact_revision),
                        }))
                        .await;
                    return;
                }
                if w.canceled {
                    let _ = tx
                        .send(Err(backend(
                            "watch",
                            format!("canceled: {}", w.cancel_reason),
                        )))
                        .await;
                    return;
                }
                for event in w.events {
                    if event.kind == "DELETE" {
                        continue;
                    }
                    let revision = Revision(event.kv.mod_revision);
                    let batch: Vec<Change> = match serde_json::from_slice(&event.kv.value) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx
                                .send(Err(backend(
                                    "watch",
                                    format!("a log entry that is not a batch: {e}"),
                                )))
                                .await;
                            return;
                        }
                    };
                    for change in batch.into_iter().filter(|c| kinds.contains(&c.kind())) {
                        if tx.send(Ok((revision, change))).await.is_err() {
                            return; // the reader dropped the stream
                        }
                    }
                }
            }
        });
        Ok(stream)
    }

    async fn campaign(&self, candidate: &str, ttl: Duration) -> Result<Leadership, StoreError> {
        let ttl_s = ttl.as_millis().div_ceil(1000).max(1) as u64;
        loop {
            if self.current_term().await?.is_some() {
                tokio::time::sleep(CAMPAIGN_POLL).await;
                continue;
            }
            let grant: wire::LeaseGrantResponse = self
                .client
                .call("/v3/lease/grant", &json!({ "TTL": ttl_s }))
                .await?;
            if !grant.error.is_empty() || grant.id == 0 {
                return Err(backend("lease grant", grant.error));
            }
            let value = LeaderValue {
                leader: candidate.to_string(),
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                elected_at: UnixMillis::now(),
                lease: grant.id,
            };
            let key = b64(self.key("leader"));
            let txn = json!({
                "compare": [ { "target": "CREATE", "key": key, "create_revision": "0", "result": "EQUAL" } ],
                "success": [ { "request_put": {
                    "key": key,
                    "value": b64(serde_json::to_vec(&value).expect("serializes")),
                    "lease": grant.id.to_string(),
                } } ],
            });
            let r: TxnResponse = self.client.call("/v3/kv/txn", &txn).await?;
            if !r.succeeded {
                // Another candidate won the race.
                let _ = self
                    .client
                    .call::<serde_json::Value>(
                        "/v3/lease/revoke",
                        &json!({ "ID": grant.id.to_string() }),
                    )
                    .await;
                continue;
            }
            let leadership = Leadership {
                leader: candidate.to_string(),
                term: Term(r.header.revision),
                ttl_ms: value.ttl_ms,
                elected_at: value.elected_at,
            };
            // Recorded in the snapshot and the log, fenced by the new term itself.
            let (snapshot, _, _) = self.read_snapshot().await?;
            let mut record = Vec::new();
            if let Some(old) = &snapshot.leadership {
                record.push(Change::LeadershipEnded {
                    term: old.term,
                    end: LeadershipEnd::LeaseExpired,
                });
            }
            record.push(Change::LeaderElected {
                leadership: leadership.clone(),
            });
            self.commit(Some(leadership.term), record).await?;
            return Ok(leadership);
        }
    }

    async fn renew(&self, leadership: &Leadership) -> Result<UnixMillis, StoreError> {
        let Some((term, value)) = self.current_term().await? else {
            return Err(StoreError::Fenced {
                presented: leadership.term,
                current: None,
            });
        };
        if term != leadership.term {
            return Err(StoreError::Fenced {
                presented: leadership.term,
                current: Some(term),
            });
        }
        let left = self.lease_ttl_left(value.lease).await?;
        if left == 0 {
            return Err(StoreError::Fenced {
                presented: leadership.term,
                current: None,
            });
        }
        Ok(UnixMillis::now().after(Duration::from_millis(leadership.ttl_ms)))
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), StoreError> {
        let Some((term, value)) = self.current_term().await? else {
            return Ok(());
        };
        if term != leadership.term {
            return Ok(());
        }
        let (snapshot, _, _) = self.read_snapshot().await?;
        if snapshot.leadership.as_ref().is_some_and(|l| l.term == term) {
            let _ = self
                .commit(
                    Some(term),
                    vec![Change::LeadershipEnded {
                        term,
                        end: LeadershipEnd::Resigned,
                    }],
                )
                .await;
        }
        self.client
            .call::<serde_json::Value>(
                "/v3/lease/revoke",
                &json!({ "ID": value.lease.to_string() }),
            )
            .await?;
        Ok(())
    }

    async fn hold_liveness(&self, host: &str, ttl: Duration) -> Result<Liveness, StoreError> {
        let ttl_s = ttl.as_millis().div_ceil(1000).max(1) as u64;
        let grant: wire::LeaseGrantResponse = self
            .client
            .call("/v3/lease/grant", &json!({ "TTL": ttl_s }))
            .await?;
        if !grant.error.is_empty() || grant.id == 0 {
            return Err(backend("lease grant (liveness)", grant.error));
        }
        let put = json!({
            "key": b64(self.key(&format!("alive/{host}"))),
            "value": b64(serde_json::to_vec(&json!({ "host": host, "since": UnixMillis::now() })).expect("serializes")),
            "lease": grant.id.to_string(),
        });
        self.client
            .call::<serde_json::Value>("/v3/kv/put", &put)
            .await?;
        Ok(Liveness {
            host: host.to_string(),
            lease: grant.id,
            ttl,
        })
    }

    async fn renew_liveness(&self, liveness: &Liveness) -> Result<(), StoreError> {
        if self.lease_ttl_left(liveness.lease).await? == 0 {
            return Err(StoreError::LivenessLapsed {
                host: liveness.host.clone(),
            });
        }
        Ok(())
    }

    async fn electing(&self) -> bool {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        // Decided as soon as a majority has answered without a leader among them: a
        // silent member costs nothing then (it would cost a connect timeout), which keeps
        // the probe well inside the half-lease its answer is good for.
        let endpoints = self.client.endpoints();
        let mut asks: FuturesUnordered<_> = endpoints
            .iter()
            .map(|&endpoint| self.member_health(endpoint))
            .collect();
        let mut followers = 0;
        while let Some(member) = asks.next().await {
            if member.leader {
                return false;
            }
            if member.reachable {
                followers += 1;
                if followers * 2 > endpoints.len() {
                    return true;
                }
            }
        }
        false
    }

    async fn live_hosts(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let prefix = self.key("alive/");
        let r: RangeResponse = self
            .client
            .read(
                "/v3/kv/range",
                &json!({ "key": b64(&prefix), "range_end": b64(prefix_end(&prefix)), "keys_only": true }),
            )
            .await?;
        Ok(r.kvs
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(&kv.key).ok()?;
                Some(key.strip_prefix(&prefix)?.to_string())
            })
            .collect())
    }

    async fn leader(&self) -> Result<Option<Leadership>, StoreError> {
        Ok(self.current_term().await?.map(|(term, v)| Leadership {
            leader: v.leader,
            term,
            ttl_ms: v.ttl_ms,
            elected_at: v.elected_at,
        }))
    }
}

/// A [`WatchStream`] fed by a task: `produce` sends items into a small bounded channel, so a
/// slow reader holds the task (and etcd's stream) back rather than growing a buffer.
fn async_stream_lines<F, Fut>(produce: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<(Revision, Change), StoreError>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(produce(tx));
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A member's health from its `maintenance/status` answer, or why there is none.
fn member_health(
    endpoint: SocketAddr,
    answer: Result<wire::StatusResponse, String>,
) -> MemberHealth {
    match answer {
        Ok(s) => MemberHealth {
            endpoint,
            reachable: true,
            leader: s.leader != 0 && s.leader == s.header.member_id,
            revision: s.header.revision,
            raft_term: s.header.raft_term,
            version: s.version,
            error: None,
        },
        Err(e) => MemberHealth {
            endpoint,
            reachable: false,
            leader: false,
            revision: 0,
            raft_term: 0,
            version: String::new(),
            error: Some(e),
        },
    }
}
