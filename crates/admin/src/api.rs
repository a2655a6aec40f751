//! The routes.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/status` | [`StatusView`] |
//! | `GET /api/activity?group=G&limit=N` | [`ActivityView`]s, newest first (limit 100 by default) |
//! | `GET /api/stack` | the stack file, `text/yaml`, environment values redacted (token needed) |
//! | `POST /api/groups/NAME/refresh` `{"cancel":false,"min_healthy_percentage":90}` | start or cancel an instance refresh (token needed) |
//! | `POST /api/plan` `{"stack": TEXT}` | what changing the running tier to that stack takes, step by step (token needed) |
//! | `POST /api/apply` `{"stack": TEXT}` | changes the running tier to it, all or nothing (token needed) |
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
//! `POST`s, `GET /api/stack` and `GET /api/token` need `Authorization: Bearer TOKEN` (401
//! otherwise); the `POST`s answer `{"ok":true}`. With [`Options::read_requires_token`]
//! every read above does too, except the console's page and assets (which hold no data);
//! `GET /api/events` then also takes the token as `?access_token=TOKEN`, because a
//! browser's `EventSource` cannot send headers.
//! Errors are `{"error": "..."}`: 400 for a malformed body or a request the stack refuses
//! (e.g. a desired capacity outside min..max), 404 when the named group or instance does
//! not exist, 401 for a missing or wrong token, 413 for a body over [`MAX_BODY`] bytes, 503
//! (with `Retry-After`) when too many event streams are open or a request got no answer
//! within the server's request timeout. The `guard` answers before any route, in plain
//! text (a wrong Host, a foreign Origin).
//!
//! [`HistoryView`]: crate::view::HistoryView
//! [`TickView`]: crate::view::TickView
//! [`Options::read_requires_token`]: crate::server::Options::read_requires_token
//! [`MAX_BODY`]: crate::guard::MAX_BODY

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::guard::{Guard, MAX_BODY};
use crate::live::{Live, StreamRefused, MAX_STREAMS};
use crate::server::Options;
use crate::view::{
    ActivityView, ErrorView, HealthRequest, HistoryView, OkView, ScaleRequest, StatusView,
    TerminateRequest, TierView,
};
use crate::{console, metrics, token, Control, ControlError};

const DEFAULT_ACTIVITY_LIMIT: usize = 100;
/// Seconds a refused event stream is told to wait: consoles stay open for minutes.
const STREAM_RETRY_AFTER: &str = "10";
/// The most activities one request returns.
const MAX_ACTIVITY_LIMIT: usize = 10_000;

#[derive(Clone)]
struct AppState {
    control: Arc<dyn Control>,
    token: Arc<str>,
    live: Arc<Live>,
    options: Options,
}

pub fn router(
    control: Arc<dyn Control>,
    token: String,
    live: Arc<Live>,
    options: Options,
    guard: Guard,
) -> Router {
    let state = AppState {
        control,
        token: token.into(),
        live,
        options,
    };
    // Everything that always needs the token: the mutating calls, the stack file (it names
    // every secret's variable, and may hold other sensitive text), the token check itself.
    let guarded = Router::new()
        .route("/api/groups/{name}/scale", post(scale))
        .route("/api/instances/{id}/terminate", post(terminate))
        .route("/api/instances/{id}/health", post(set_health))
        .route("/api/down", post(down))
        .route("/api/stack", get(stack))
        .route("/api/plan", post(plan))
        .route("/api/groups/{name}/refresh", post(refresh))
        .route("/api/apply", post(apply))
        .route("/api/token", get(|| async { ok() }))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    // The reads: open unless the stack sets admin.read_requires_token.
    let reads = Router::new()
        .route("/api/status", get(status))
        .route("/api/tier", get(tier))
        .route("/api/activity", get(activity))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .route("/metrics", get(scrape))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authorize_read,
        ));
    let guard = Arc::new(guard);
    Router::new()
        .merge(reads)
        .merge(console::routes())
        .merge(guarded)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
        // Outermost: a request with a foreign Host meets no route, not even a 404.
        .layer(middleware::from_fn_with_state(guard, crate::guard::check))
}

/// 413, for a body over [`MAX_BODY`] (the guard's answer to a Content-Length, the body
/// reader's to a chunked body that grows too long).
pub fn too_large() -> Response {
    too_large_error().into_response()
}

fn too_large_error() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {MAX_BODY} bytes"),
    )
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

    /// A refusal from [`Control`]: 404 when what it names does not exist, 400 when refused as
    /// it stands, 504 when taken but not yet carried out, 503 when the state does not answer.
    fn from_control(e: ControlError) -> ApiError {
        let status = match &e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Refused(_) => StatusCode::BAD_REQUEST,
            ControlError::Pending(_) => StatusCode::GATEWAY_TIMEOUT,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
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

/// The bearer token of `Authorization: Bearer TOKEN`, if the header is there.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
}

/// Whether `given` is the token; `Err` is the 401 to answer.
fn check_token(state: &AppState, given: Option<&[u8]>, what: &str) -> Result<(), ApiError> {
    match given {
        Some(given) if token::matches(given, state.token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "{what} needs Authorization: Bearer TOKEN (the token is in STATE_DIR/admin.token)"
            ),
        )),
    }
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    match check_token(&state, bearer(&headers), "this call") {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Reads pass unless `read_requires_token`; then they need the token like any call. The
/// event stream may carry it as `?access_token=` (RFC 6750 §2.3): `EventSource` cannot set
/// headers. Nothing logs request targets, so the token in it is not written anywhere.
async fn authorize_read(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if !state.options.read_requires_token {
        return next.run(request).await;
    }
    let in_query = (request.uri().path() == "/api/events")
        .then(|| request.uri().query())
        .flatten()
        .and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("access_token="))
        })
        .map(str::as_bytes);
    let what = "reading (admin.read_requires_token is set)";
    match check_token(&state, bearer(&headers).or(in_query), what) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// A request body, or the answer to one that could not be read (413 when over the limit).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large_error()
        } else {
            ApiError::new(
                e.status(),
                format!("cannot read the request body: {}", e.body_text()),
            )
        }
    })
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
        let mut view =
            StatusView::build(&c.balancer(), &c.groups(), proxyfleet_state::report::now());
        view.tier = c.tier();
        view
    })
    .await?;
    Ok(Json(view))
}

async fn tier(State(state): State<AppState>) -> Result<Json<TierView>, ApiError> {
    blocking(&state, |c| c.tier())
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this API is `proxyfleet up`'s, not a tier of agents': no tier to show",
            )
        })
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

/// An event stream, or at once 503 with `Retry-After` when [`MAX_STREAMS`] are open (the
/// connection closed after it: a client that opens streams in a loop gets nothing to keep).
async fn events(State(state): State<AppState>) -> Response {
    match state.live.clone().events().await {
        Ok(stream) => stream,
        Err(StreamRefused::TooMany) => (
            [
                (
                    header::RETRY_AFTER,
                    HeaderValue::from_static(STREAM_RETRY_AFTER),
                ),
                (header::CONNECTION, HeaderValue::from_static("close")),
            ],
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_STREAMS} consoles are open already; close one"),
            ),
        )
            .into_response(),
        Err(StreamRefused::Failed(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// The stack file with every environment value replaced by `<redacted>` (names kept).
/// Redacted here rather than trusted to [`Control`], so no implementation can leak them;
/// text that cannot be redacted for sure is not shown at all.
async fn stack(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = blocking(&state, |c| c.stack_text()).await?;
    let Some(text) = proxyfleet_stack::redact_environment(&text) else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stack file cannot be shown: its environment values could not be redacted",
        ));
    };
    Ok(([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], text).into_response())
}

/// `POST /api/groups/{name}/refresh`'s body (may be empty: start, min healthy 90 %).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    #[serde(default)]
    cancel: bool,
    #[serde(default)]
    min_healthy_percentage: Option<u32>,
}

async fn refresh(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OkView>, ApiError> {
    let body = read_body(body)?;
    let req: RefreshRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RefreshRequest::default()
    } else {
        parse_body(&body)?
    };
    let percentage = req.min_healthy_percentage.unwrap_or(90);
    if percentage > 100 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("min_healthy_percentage {percentage} is over 100"),
        ));
    }
    blocking(&state, move |c| c.refresh(&name, req.cancel, percentage))
        .await?
        .map_err(ApiError::from_control)?;
    Ok(ok())
}

/// `POST /api/plan` and `/api/apply`'s answer.
#[derive(serde::Serialize)]
struct PlanView {
    steps: Vec<proxyfleet_stack::plan::Step>,
    /// Every step can be applied to the running tier.
    applicable: bool,
    applied: bool,
}

/// `POST /api/plan` and `/api/apply`'s body: the stack file's text.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StackRequest {
    stack: String,
}

fn stack_body(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    Ok(parse_body::<StackRequest>(&read_body(body)?)?.stack)
}

async fn plan(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PlanView>, ApiError> {
    let text = stack_body(body)?;
    let steps = blocking(&state, move |c| c.plan(&text))
        .await?
        .map_err(ApiError::from_control)?;
    Ok(Json(PlanView {
        applicable: proxyfleet_stack::plan::applicable(&steps),
        steps,
        applied: false,
    }))
}

async fn apply(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PlanView>, ApiError> {
    let text = stack_body(body)?;
    tracing::info!("admin API: apply requested");
    let steps = blocking(&state, move |c| c.apply(&text))
        .await?
        .map_err(ApiError::from_control)?;
    Ok(Json(PlanView {
        applicable: true,
        applied: !steps.is_empty(),
        steps,
    }))
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OkView>, ApiError> {
    let req: ScaleRequest = parse_body(&read_body(body)?)?;
    blocking(&state, move |c| c.scale(&name, req.desired))
        .await?
        .map_err(ApiError::from_control)?;
    Ok(ok())
}

async fn terminate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OkView>, ApiError> {
    let body = read_body(body)?;
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OkView>, ApiError> {
    let req: HealthRequest = parse_body(&read_body(body)?)?;
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
