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
        } => line(
            None,
            format!("Setting the desired capacity of {group} to {desired}"),
            cause.activity_text(),
        ),
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
    let mut stream = loop {
        match store.watch(Kind::ALL, from).await {
            Ok(s) => break s,
            // The oldest part of the log is gone: read what is left.
            Err(StoreError::Compacted { oldest, .. }) if oldest > from => from = oldest,
            Err(e) => return Err(e),
        }
    };
    let mut lines = std::collections::VecDeque::new();
    while let Some(item) = stream.next().await {
        let (revision, change) = item?;
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
