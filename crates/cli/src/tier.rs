//! `status -f STACK` and `activity -f STACK`: a tier of agents, read from its store — the
//! etcd cluster the stack names, or a lone agent's SQLite store under `--state-dir` — rather
//! than from an `up`'s admin API. Any machine that reaches the store can look.

use std::path::Path;
use std::sync::Arc;

use proxyfleet_admin::view::{EtcdMemberView, TierHostView, TierLeaderView, TierView};
use proxyfleet_roles::report::TierStatus;
use proxyfleet_state::{StateStore, UnixMillis};

use crate::client::{human_duration, table};
use crate::Failure;

/// The stack file, or a usage error naming it.
pub fn load_stack(path: &Path) -> Result<proxyfleet_stack::Stack, Failure> {
    proxyfleet_stack::load(path).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("{e}"),
    })
}

/// The store the stack's agents share: the etcd cluster the stack names, else the SQLite
/// store of a lone agent under `state_dir` (created only when `create`: an agent starting,
/// not `status` looking).
pub fn open_store(
    stack: &proxyfleet_stack::Stack,
    state_dir: &Path,
    create: bool,
) -> Result<Arc<dyn StateStore>, Failure> {
    if let Some(etcd) = &stack.etcd {
        return Ok(Arc::new(proxyfleet_state::EtcdStore::new(
            etcd.endpoints.clone(),
            &etcd.prefix,
        )));
    }
    let db = state_dir.join("roles.db");
    if !create && !db.exists() {
        return Err(Failure {
            code: 2,
            error: anyhow::anyhow!(
                "no agent state at {} (the stack names no etcd cluster, so a lone agent keeps its state there: pass its --state-dir)",
                db.display()
            ),
        });
    }
    Ok(Arc::new(proxyfleet_state::SqliteStore::open(&db)?))
}

/// `status -f`'s answer: the tier, and each etcd member's health when there is a cluster.
#[derive(serde::Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub tier: TierStatus,
    pub etcd: Vec<proxyfleet_state::etcd::MemberHealth>,
}

pub async fn status(
    stack: &proxyfleet_stack::Stack,
    store: &dyn StateStore,
) -> Result<Status, Failure> {
    let etcd = match &stack.etcd {
        Some(e) => {
            proxyfleet_state::EtcdStore::new(e.endpoints.clone(), &e.prefix)
                .health()
                .await
        }
        None => Vec::new(),
    };
    let (snapshot, revision) = store.snapshot().await?;
    let leader = store.leader().await?;
    let live = store.live_hosts().await?;
    let tier = TierStatus::build(
        &snapshot,
        revision,
        leader.as_ref(),
        &live,
        UnixMillis::now(),
    );
    Ok(Status { tier, etcd })
}

/// The tier's part of [`Status`] as an agent's API shows it (`this_host`: none, the store
/// was read directly).
fn tier_view(status: &Status) -> TierView {
    let s = &status.tier;
    TierView {
        this_host: "this machine".to_string(),
        store: if status.etcd.is_empty() {
            "sqlite"
        } else {
            "etcd"
        }
        .to_string(),
        revision: s.revision,
        connected: true,
        leader: s.leader.as_ref().map(|l| TierLeaderView {
            host: l.host.clone(),
            term: l.term,
            lease_ms: l.lease_ms,
        }),
        hosts: s
            .hosts
            .iter()
            .map(|h| TierHostView {
                id: h.id.clone(),
                zone: h.zone.clone(),
                address: h.address,
                roles: h.roles.clone(),
                live: h.live,
                announced_ms_ago: h.announced_ms_ago,
                nodes: h.nodes.clone(),
            })
            .collect(),
        etcd: status.etcd.iter().map(member_view).collect(),
    }
}

pub fn member_view(m: &proxyfleet_state::etcd::MemberHealth) -> EtcdMemberView {
    EtcdMemberView {
        endpoint: m.endpoint.to_string(),
        reachable: m.reachable,
        leader: m.leader,
        revision: m.revision,
        error: m.error.clone(),
    }
}

/// The tables `status -f` prints.
pub fn render(status: &Status) -> String {
    let s = &status.tier;
    let mut out = crate::status::render_tier(&tier_view(status));
    let rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.min.to_string(),
                g.desired.to_string(),
                g.max.to_string(),
                g.in_service.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["GROUP", "MIN", "DESIRED", "MAX", "IN SERVICE"],
        &rows,
    ));
    out.push('\n');
    let now = UnixMillis::now();
    let rows: Vec<Vec<String>> = s
        .instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.group.clone(),
                i.zone.clone(),
                i.host.clone().unwrap_or_else(|| "-".into()),
                i.address.to_string(),
                i.lifecycle.clone(),
                i.health.clone(),
                human_duration(now.0.saturating_sub(i.launched_at.0) as f64 / 1000.0),
                i.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "INSTANCE",
            "GROUP",
            "ZONE",
            "HOST",
            "ADDRESS",
            "LIFECYCLE",
            "HEALTH",
            "AGE",
            "REASON",
        ],
        &rows,
    ));
    out.push('\n');
    let mut rows = Vec::new();
    for t in &s.targets {
        rows.push(vec![
            format!("{} {}", t.target_group, t.address),
            t.zone.clone(),
            t.state.clone(),
            String::new(),
        ]);
        for (node, health, reason) in &t.nodes {
            rows.push(vec![
                format!("  {node}"),
                String::new(),
                health.clone(),
                reason.clone(),
            ]);
        }
    }
    out.push_str(&table(&["TARGET", "ZONE", "STATE", "REASON"], &rows));
    out
}

/// `activity -f`: the store's log, newest first.
pub fn render_activity(list: &[proxyfleet_roles::history::Activity]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                a.revision.to_string(),
                a.at.map(|t| crate::activity::time(t.0 as f64 / 1000.0))
                    .unwrap_or_default(),
                a.description.clone(),
                a.cause.clone(),
            ]
        })
        .collect();
    table(&["REVISION", "TIME", "DESCRIPTION", "CAUSE"], &rows)
}
