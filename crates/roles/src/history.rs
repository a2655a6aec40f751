//! The tier's activity history, read from the store's change log: every launch, termination,
//! verdict and election, with its cause, whichever controller or agent wrote it. Because it
//! is the log itself, it stays continuous across a change of leader.

use futures_util::StreamExt;
use proxyfleet_state::{
    Change, InstanceHealth, Kind, Lifecycle, Revision, StateStore, StoreError, UnixMillis,
};
use serde::Serialize;

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub revision: u64,
    /// When it happened, where the change says (most do).
    pub at: Option<UnixMillis>,
    pub description: String,
    pub cause: String,
}

/// The line a change makes, if it is worth one (heartbeats and health reports are not).
pub fn activity(revision: Revision, change: &Change) -> Option<Activity> {
    let line = |at: Option<UnixMillis>, description: String, cause: String| {
        Some(Activity {
            revision: revision.0,
            at,
            description,
            cause,
        })
    };
    let cause_of = |c: &Option<proxyfleet_state::Cause>| {
        c.as_ref().map(|c| c.activity_text()).unwrap_or_default()
    };
    match change {
        Change::RegisterHost { host } => line(
            Some(host.last_heartbeat),
            format!(
                "Host {} (zone {}, {}) announced itself",
                host.id, host.zone, host.address
            ),
            "its agent started".to_string(),
        ),
        Change::CreateInstance {
            id,
            group,
            zone,
            address,
            cause,
            at,
            ..
        } => line(
            Some(*at),
            format!("Launching a new instance: {id} ({address}, zone {zone}, group {group})"),
            cause.activity_text(),
        ),
        Change::AssignInstance { instance, host } => line(
            None,
            format!("Instance {instance} assigned to host {host}"),
            "its zone's live host".to_string(),
        ),
        Change::ReportLifecycle {
            instance,
            lifecycle,
            cause,
            at,
        } => {
            let description = match lifecycle {
                Lifecycle::Pending => return None,
                Lifecycle::InService => format!("Instance {instance} in service"),
                Lifecycle::Terminating => format!("Terminating instance {instance}"),
                Lifecycle::Terminated => format!("Instance {instance} terminated"),
            };
            line(Some(*at), description, cause_of(cause))
        }
        Change::ReportInstanceHealth {
            instance,
            health: InstanceHealth::Unhealthy,
            cause,
        } => line(
            None,
            format!("Instance {instance} found unhealthy"),
            cause_of(cause),
        ),
        Change::SetDesired {
            group,
            desired,
            cause,
            ..
        } => line(
            None,
            format!("Setting the desired capacity of {group} to {desired}"),
            cause.activity_text(),
        ),
        Change::SetRefresh {
            group, outcome, at, ..
        } => line(
            Some(*at),
            format!("Instance refresh of {group}"),
            outcome.clone(),
        ),
        Change::StackApplied { group, summary, at } => line(
            Some(*at),
            format!("Applying a changed stack to {group}"),
            format!("an operator ran proxyfleet apply: {summary}"),
        ),
        Change::HoldReplacements { group, held, at } => match held {
            Some(why) => line(
                Some(*at),
                format!("Holding replacements in {group} for load balancer health"),
                why.clone(),
            ),
            None => line(
                Some(*at),
                format!("Resuming replacements in {group} for load balancer health"),
                "no new instance fails the load balancer's health checks any more".to_string(),
            ),
        },
        Change::FileRequest { request } => line(
            Some(request.at),
            format!("Request {}: {}", request.id, request.ask),
            format!("an operator asked through host {}'s API", request.filed_by),
        ),
        Change::CloseRequest { id, refused } => line(
            None,
            match refused {
                None => format!("Request {id} carried out"),
                Some(why) => format!("Request {id} refused: {why}"),
            },
            "the controller".to_string(),
        ),
        Change::LeaderElected { leadership } => line(
            Some(leadership.elected_at),
            format!(
                "Controller elected: {} (term {})",
                leadership.leader, leadership.term
            ),
            "it won the agents' election".to_string(),
        ),
        Change::LeadershipEnded { term, end } => line(
            None,
            format!("Controller term {term} ended"),
            match end {
                proxyfleet_state::LeadershipEnd::Resigned => "the leader resigned",
                proxyfleet_state::LeadershipEnd::LeaseExpired => {
                    "its lease was not renewed in time"
                }
            }
            .to_string(),
        ),
        _ => None,
    }
}

/// The newest `limit` lines, newest first.
pub async fn read(store: &dyn StateStore, limit: usize) -> Result<Vec<Activity>, StoreError> {
    let (_, head) = store.snapshot().await?;
    let mut from = Revision(1);
    let mut lines = std::collections::VecDeque::new();
    let mut stream = loop {
        if from > head {
            // Compacted past the last batch: nothing of the log is left to read.
            return Ok(Vec::new());
        }
        match store.watch(Kind::ALL, from).await {
            Ok(s) => break s,
            // The oldest part of the log is gone: read what is left.
            Err(StoreError::Compacted { oldest, .. }) if oldest > from => from = oldest,
            Err(e) => return Err(e),
        }
    };
    while let Some(item) = stream.next().await {
        let (revision, change) = match item {
            Ok(x) => x,
            // etcd says so on the stream: read what is left, if anything.
            Err(StoreError::Compacted { oldest, .. }) if oldest > from && lines.is_empty() => {
                if oldest > head {
                    return Ok(Vec::new());
                }
                from = oldest;
                stream = store.watch(Kind::ALL, from).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if revision > head {
            break;
        }
        if let Some(a) = activity(revision, &change) {
            if lines.len() == limit {
                lines.pop_front();
            }
            lines.push_back(a);
        }
        if revision == head {
            // The last batch may hold more changes at this revision: take what is ready.
            while let Some(Some(Ok((r, c)))) = futures_util::FutureExt::now_or_never(stream.next())
            {
                if r != head {
                    break;
                }
                if let Some(a) = activity(r, &c) {
                    if lines.len() == limit {
                        lines.pop_front();
                    }
                    lines.push_back(a);
                }
            }
            break;
        }
    }
    Ok(lines.into_iter().rev().collect())
}

/// Logs an instance's move to another lifecycle or health, one line per transition (what
/// `up`'s group controller logs, so an operator — and the fault drills — can follow an
/// instance through Unhealthy, Terminating, Terminated), for changes after following began.
fn log_transition(
    inner: &mut RecentInner,
    revision: Revision,
    group: Option<&str>,
    change: &Change,
) {
    let (id, cause) = match change {
        Change::CreateInstance { id, cause, .. } => {
            inner
                .states
                .insert(id.clone(), (Lifecycle::Pending, InstanceHealth::Healthy));
            (id, Some(cause))
        }
        Change::ReportLifecycle {
            instance, cause, ..
        }
        | Change::ReportInstanceHealth {
            instance, cause, ..
        } => (instance, cause.as_ref()),
        Change::ForgetInstance { instance } => {
            inner.states.remove(instance);
            return;
        }
        _ => return,
    };
    let Some(state) = inner.states.get_mut(id) else {
        return;
    };
    let before = *state;
    match change {
        Change::ReportLifecycle { lifecycle, .. } if *lifecycle > state.0 => state.0 = *lifecycle,
        Change::ReportInstanceHealth { health, .. } => state.1 = *health,
        _ => {}
    }
    let after = *state;
    let created = matches!(change, Change::CreateInstance { .. });
    if (created || after != before) && revision > inner.logged_after {
        tracing::info!(
            group = group.unwrap_or_default(),
            instance = %id,
            lifecycle = after.0.as_str(),
            health = ?after.1,
            reason = %cause.map(ToString::to_string).unwrap_or_default(),
            "instance state changed"
        );
    }
}

/// How many lines [`Recent`] keeps.
pub const RECENT_LINES: usize = 10_000;

/// How many closed requests [`Recent`] remembers the outcome of.
const RECENT_OUTCOMES: usize = 1_000;

/// The newest lines of the history, kept in memory by following the store's log: what an
/// agent's API serves (every second to an open console) without reading the whole log per
/// request. Each line carries its group where the log says it (instances are looked up by
/// the group their creation named).
#[derive(Default)]
pub struct Recent {
    inner: std::sync::Mutex<RecentInner>,
}

#[derive(Default)]
struct RecentInner {
    lines: std::collections::VecDeque<(Option<String>, Activity)>,
    group_of: std::collections::HashMap<String, String>,
    /// Closed requests, oldest first: `(id, refused)`.
    outcomes: std::collections::VecDeque<(String, Option<String>)>,
    /// The last revision taken, and how many of its changes (a batch shares a revision; a
    /// watch opened again from it skips those).
    at: Revision,
    taken_at: usize,
    /// Each known instance's lifecycle and health: a change of either is logged.
    states: std::collections::HashMap<String, (Lifecycle, InstanceHealth)>,
    /// The store's revision when following began: what came before is history, not logged.
    logged_after: Revision,
    /// The same log as the cloud's scaling activities (what `up` shows).
    scaling: crate::activities::Scaling,
}

impl Recent {
    /// Follows `store`'s log from its oldest retained revision until `stop`, watching again
    /// (from where it was) whenever a watch ends or stalls.
    pub fn follow(
        store: std::sync::Arc<dyn StateStore>,
        stop: tokio_util::sync::CancellationToken,
    ) -> std::sync::Arc<Recent> {
        let recent = std::sync::Arc::new(Recent::default());
        let me = recent.clone();
        tokio::spawn(async move {
            if let Ok((_, head)) = store.snapshot().await {
                me.lock().logged_after = head;
            }
            let mut pause = std::time::Duration::from_millis(50);
            loop {
                let ended = tokio::select! {
                    e = me.follow_once(&*store) => e,
                    () = stop.cancelled() => return,
                };
                tracing::debug!(error = %ended, "history: watch ended; watching again");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
        });
        recent
    }

    async fn follow_once(&self, store: &dyn StateStore) -> String {
        let (mut from, mut skip) = {
            let inner = self.lock();
            (Revision(inner.at.0.max(1)), inner.taken_at)
        };
        let mut stream = loop {
            match store.watch(Kind::ALL, from).await {
                Ok(s) => break s,
                Err(StoreError::Compacted { oldest, .. }) if oldest > from => {
                    from = oldest;
                    skip = 0;
                }
                Err(e) => return e.to_string(),
            }
        };
        loop {
            let at = self.lock().at;
            let item = match crate::view::next_or_stalled(&mut stream, store, at).await {
                Ok(Some(item)) => item,
                Ok(None) => return "the watch ended".to_string(),
                Err(e) => return e,
            };
            let (revision, change) = match item {
                Ok(x) => x,
                // etcd says so on the stream: go on from where the log still is.
                Err(StoreError::Compacted { oldest, .. }) if oldest > from => {
                    let mut inner = self.lock();
                    inner.at = oldest;
                    inner.taken_at = 0;
                    return format!("compacted up to revision {oldest}");
                }
                Err(e) => return e.to_string(),
            };
            if revision == from && skip > 0 {
                skip -= 1;
                continue;
            }
            self.take(revision, &change);
        }
    }

    fn take(&self, revision: Revision, change: &Change) {
        let mut inner = self.lock();
        if revision == inner.at {
            inner.taken_at += 1;
        } else {
            inner.at = revision;
            inner.taken_at = 1;
        }
        let group = match change {
            Change::CreateInstance { id, group, .. } => {
                inner.group_of.insert(id.clone(), group.clone());
                Some(group.clone())
            }
            Change::SetDesired { group, .. }
            | Change::HoldReplacements { group, .. }
            | Change::StackApplied { group, .. }
            | Change::SetRefresh { group, .. } => Some(group.clone()),
            Change::FileRequest { request } => match &request.ask {
                proxyfleet_state::Ask::Scale { group, .. }
                | proxyfleet_state::Ask::Refresh { group, .. }
                | proxyfleet_state::Ask::CancelRefresh { group } => Some(group.clone()),
                proxyfleet_state::Ask::Terminate { instance, .. }
                | proxyfleet_state::Ask::SetHealth { instance, .. } => {
                    inner.group_of.get(instance).cloned()
                }
            },
            Change::ForgetInstance { instance } => inner.group_of.remove(instance),
            c => match c.key() {
                proxyfleet_state::Key::Instance(id) => inner.group_of.get(&id).cloned(),
                _ => None,
            },
        };
        log_transition(&mut inner, revision, group.as_deref(), change);
        inner.scaling.take(change);
        if let Change::CloseRequest { id, refused } = change {
            if inner.outcomes.len() == RECENT_OUTCOMES {
                inner.outcomes.pop_front();
            }
            inner.outcomes.push_back((id.clone(), refused.clone()));
        }
        if let Some(line) = activity(revision, change) {
            if inner.lines.len() == RECENT_LINES {
                inner.lines.pop_front();
            }
            inner.lines.push_back((group, line));
        }
    }

    /// The newest `limit` scaling activities (of `group` only, if given), newest first
    /// ([`crate::activities`]).
    pub fn scaling_activities(
        &self,
        group: Option<&str>,
        limit: usize,
    ) -> Vec<proxyfleet_state::report::Activity> {
        self.lock().scaling.newest(group, limit)
    }

    /// The newest `limit` lines (of `group` only, if given), newest first, each with its
    /// group.
    pub fn lines(&self, group: Option<&str>, limit: usize) -> Vec<(Option<String>, Activity)> {
        self.lock()
            .lines
            .iter()
            .rev()
            .filter(|(g, _)| group.is_none() || g.as_deref() == group)
            .take(limit)
            .cloned()
            .collect()
    }

    /// How request `id` was closed: `None` while it is not (or not seen yet); `Some(None)`:
    /// carried out; `Some(Some(why))`: refused.
    pub fn outcome(&self, id: &str) -> Option<Option<String>> {
        self.lock()
            .outcomes
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
