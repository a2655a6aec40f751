//! `proxyfleet agent --api ADDR`: a read-only HTTP view of the whole tier, served by any agent
//! from the shared store (no agent needs to be asked about its own part):
//!
//! - `GET /api/tier`: what `proxyfleet status -f STACK --json` prints — etcd members' health,
//!   the controller, hosts with roles and liveness, groups, instances, targets;
//! - `GET /api/activity?limit=N`: the history from the store's log, newest first;
//! - `GET /healthz`: `ok` while the agent runs.
//!
//! It writes nothing (scaling and terminating go through the agent's admin API in its state
//! directory, `agent_control`), has no token, and shows instance addresses and pids: bind it
//! to loopback or a management network.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use proxyfleet_state::StateStore;
use tokio_util::sync::CancellationToken;

struct ApiState {
    stack: proxyfleet_stack::Stack,
    store: Arc<dyn StateStore>,
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// Most history lines one request returns.
const MAX_LIMIT: usize = 10_000;

/// Binds `addr` (so a conflict fails the agent's start) and serves until `stop`.
pub async fn serve(
    addr: SocketAddr,
    stack: proxyfleet_stack::Stack,
    store: Arc<dyn StateStore>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/api/tier", get(tier))
        .route("/api/activity", get(activity))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Arc::new(ApiState { stack, store }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(bound)
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("state store unavailable: {e}\n"),
    )
        .into_response()
}

async fn tier(State(s): State<Arc<ApiState>>) -> Response {
    match crate::tier::status(&s.stack, &*s.store).await {
        Ok(status) => Json(status).into_response(),
        Err(f) => unavailable(f.error),
    }
}

async fn activity(State(s): State<Arc<ApiState>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(100).min(MAX_LIMIT);
    match proxyfleet_roles::history::read(&*s.store, limit).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => unavailable(e),
    }
}
