//! The routes.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/status` | [`StatusView`] |
//! | `GET /api/activity?group=G&limit=N` | [`ActivityView`]s, newest first (limit 100 by default) |
//! | `GET /api/stack` | the stack file, `text/yaml` |
//! | `GET /api/history` | [`HistoryView`]: the last five minutes, one sample per second |
//! | `GET /api/events` | server-sent events: `history`, then a [`TickView`] per second |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /`, `GET /console/...` | the web console (see `console`) |
//! | `GET /api/token` | `{"ok":true}` when the bearer token is right (nothing else) |
//! | `POST /api/groups/{name}/scale` | body [`ScaleRequest`] |
//! | `POST /api/instances/{id}/terminate` | body [`TerminateRequest`] (may be empty) |
//! | `POST /api/instances/{id}/health` | body [`HealthRequest`] |
//! | `POST /api/down` | asks `up` to stop |
//!
//! `POST`s and `GET /api/token` need `Authorization: Bearer TOKEN` (401 otherwise) and
//! answer `{"ok":true}`.
//! Errors are `{"error": "..."}`: 400 for a malformed body or a request the stack refuses
//! (e.g. a desired capacity outside min..max), 404 when the named group or instance does
//! not exist, 401 for a missing or wrong token, 503 when too many event streams are open.
//!
//! [`HistoryView`]: crate::view::HistoryView
//! [`TickView`]: crate::view::TickView

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::live::{Live, StreamRefused, MAX_STREAMS};
use crate::view::{
    ActivityView, ErrorView, HealthRequest, HistoryView, OkView, ScaleRequest, StatusView,
    TerminateRequest,
};
use crate::{console, metrics, token, Control};

const DEFAULT_ACTIVITY_LIMIT: usize = 100;
/// The most activities one request returns.
const MAX_ACTIVITY_LIMIT: usize = 10_000;

#[derive(Clone)]
struct AppState {
    control: Arc<dyn Control>,
    token: Arc<str>,
    live: Arc<Live>,
}

pub fn router(control: Arc<dyn Control>, token: String, live: Arc<Live>) -> Router {
    let state = AppState {
        control,
        token: token.into(),
        live,
    };
    // Everything that needs the token: the mutating calls, and the token check itself.
    let guarded = Router::new()
        .route("/api/groups/{name}/scale", post(scale))
        .route("/api/instances/{id}/terminate", post(terminate))
        .route("/api/instances/{id}/health", post(set_health))
        .route("/api/down", post(down))
        .route("/api/token", get(|| async { ok() }))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/api/status", get(status))
        .route("/api/activity", get(activity))
        .route("/api/stack", get(stack))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .route("/metrics", get(scrape))
        .merge(console::routes())
        .merge(guarded)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A refusal from [`Control`]: 404 when what it names does not exist, else 400.
    fn from_control(message: String) -> ApiError {
        // The group controller's wording ("no group 'x'", "no live instance 'x'").
        let missing = ["no group", "no live instance", "no instance", "no such"]
            .iter()
            .any(|p| message.starts_with(p));
        let status = if missing {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorView {
                error: self.message,
            }),
        )
            .into_response()
    }
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(given) if token::matches(given, state.token.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong bearer token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this call needs Authorization: Bearer TOKEN (the token is in STATE_DIR/admin.token)",
        )
        .into_response(),
    }
}

/// Runs a [`Control`] call off the async workers: the group controller's calls may touch
/// its database.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Control) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let control = state.control.clone();
    tokio::task::spawn_blocking(move || f(control.as_ref()))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn ok() -> Json<OkView> {
    Json(OkView { ok: true })
}

async fn status(State(state): State<AppState>) -> Result<Json<StatusView>, ApiError> {
    let view = blocking(&state, |c| {
        StatusView::build(&c.balancer(), &c.groups(), proxyfleet_group::model::now())
    })
    .await?;
    Ok(Json(view))
}

#[derive(Deserialize)]
struct ActivityQuery {
    group: Option<String>,
    limit: Option<usize>,
}

async fn activity(
    State(state): State<AppState>,
    query: Result<Query<ActivityQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ActivityView>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_ACTIVITY_LIMIT)
        .min(MAX_ACTIVITY_LIMIT);
    let list = blocking(&state, move |c| {
        c.activities(q.group.as_deref(), limit)
            .iter()
            .map(ActivityView::from)
            .collect()
    })
    .await?;
    Ok(Json(list))
}

async fn history(State(state): State<AppState>) -> Json<HistoryView> {
    Json(state.live.history())
}

async fn events(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.live.clone().events().await.map_err(|e| match e {
        StreamRefused::TooMany => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} consoles are open already; close one"),
        ),
        StreamRefused::Failed(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e),
    })
}

async fn stack(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = blocking(&state, |c| c.stack_text()).await?;
    Ok(([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], text).into_response())
}

async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = blocking(&state, metrics::render)
        .await?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

async fn scale(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<OkView>, ApiError> {
    let req: ScaleRequest = parse_body(&body)?;
    blocking(&state, move |c| c.scale(&name, req.desired))
        .await?
        .map_err(ApiError::from_control)?;
    Ok(ok())
}

async fn terminate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<OkView>, ApiError> {
    let req: TerminateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TerminateRequest::default()
    } else {
        parse_body(&body)?
    };
    blocking(&state, move |c| c.terminate(&id, req.decrement_desired))
        .await?
        .map_err(ApiError::from_control)?;
    Ok(ok())
}

async fn set_health(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<OkView>, ApiError> {
    let req: HealthRequest = parse_body(&body)?;
    blocking(&state, move |c| c.set_instance_health(&id, req.healthy))
        .await?
        .map_err(ApiError::from_control)?;
    Ok(ok())
}

async fn down(State(state): State<AppState>) -> Result<Json<OkView>, ApiError> {
    tracing::info!("admin API: down requested");
    blocking(&state, |c| c.shutdown()).await?;
    Ok(ok())
}
