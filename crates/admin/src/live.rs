//! Live data for the web console: a sampler that records the balancer once per second into
//! the [`History`] ring, and `GET /api/events`, a stream of server-sent events.
//!
//! Why server-sent events rather than polling: the sampler already wakes once per second, so
//! it builds one tick (status, sample, newest activities), serializes it once and hands the
//! same bytes to every open console through a `watch` channel. The cost of a tick does not
//! grow with the number of viewers, a console gets each sample as it is taken, and the
//! browser's `EventSource` reconnects by itself. With nobody watching, the sampler only
//! reads the balancer's counters (the five minutes of history must exist before a console
//! opens); the status and the activity history (a database read) are built only for
//! viewers.
//!
//! A stream holds a connection for as long as the page is open, so streams are bounded
//! ([`MAX_STREAMS`], far below the server's connection limit; one beyond is refused at once
//! rather than queued), and
//! every stream ends when the server starts its graceful stop, which would otherwise wait
//! for them forever.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};

use proxyfleet_state::report::BalancerStatus;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::MissedTickBehavior;

use crate::history::{History, INTERVAL};
use crate::view::{ActivityView, HistoryView, SampleView, StatusView, TickView};
use crate::Control;

/// Event streams open at a time (across the TCP port and the Unix socket); the next is
/// refused at once.
pub const MAX_STREAMS: usize = 32;
/// Activities sent with each tick (the console's list; the API has the rest).
pub const TICK_ACTIVITIES: usize = 50;

pub struct Live {
    control: Arc<dyn Control>,
    history: Mutex<History>,
    /// The latest tick, as JSON; `None` until a console has been open.
    ticks: watch::Sender<Option<Arc<str>>>,
    streams: Arc<Semaphore>,
    /// Becomes true when the server starts stopping.
    closing: watch::Receiver<bool>,
}

/// Why a stream was not opened.
#[derive(Debug)]
pub enum StreamRefused {
    TooMany,
    Failed(String),
}

impl Live {
    pub fn new(control: Arc<dyn Control>, closing: watch::Receiver<bool>) -> Arc<Live> {
        Arc::new(Live {
            control,
            history: Mutex::new(History::default()),
            ticks: watch::Sender::new(None),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closing,
        })
    }

    /// Samples once per [`INTERVAL`] until the server starts stopping.
    pub async fn run(self: Arc<Self>) {
        let mut interval = tokio::time::interval(INTERVAL);
        // After a stall, carry on from now rather than catching up with a burst: the rates
        // are computed over the time that really passed anyway.
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut closing = self.closing.clone();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            // Control's calls may block (the activity history is in a database).
            let live = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || live.sample()).await {
                tracing::error!(error = %e, "console sampler failed");
            }
        }
    }

    fn sample(&self) {
        let balancer = self.control.balancer();
        let sample = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&balancer, Instant::now(), proxyfleet_state::report::now());
        if self.ticks.receiver_count() == 0 {
            return;
        }
        let tick = self.tick(&balancer, Some(sample));
        self.ticks.send_replace(Some(tick));
    }

    fn tick(&self, balancer: &BalancerStatus, sample: Option<SampleView>) -> Arc<str> {
        let groups = self.control.groups();
        let tick = TickView {
            status: StatusView {
                tier: self.control.tier(),
                ..StatusView::build(balancer, &groups, proxyfleet_state::report::now())
            },
            sample,
            activity: self
                .control
                .activities(None, TICK_ACTIVITIES)
                .iter()
                .map(ActivityView::from)
                .collect(),
        };
        serde_json::to_string(&tick)
            .expect("the views serialize")
            .into()
    }

    pub fn history(&self) -> HistoryView {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .view()
    }

    /// `GET /api/events`: first `event: history` (the last five minutes) and a `tick` built
    /// now, then a `tick` per sample until the client leaves or the server stops.
    pub async fn events(self: Arc<Self>) -> Result<Response, StreamRefused> {
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| StreamRefused::TooMany)?;
        // Subscribed before the snapshot, so no sample falls between the two; one may come
        // twice, which the console ignores by its time.
        let ticks = self.ticks.subscribe();
        let live = self.clone();
        let (history, first) = tokio::task::spawn_blocking(move || {
            let history = serde_json::to_string(&live.history()).expect("the views serialize");
            (history, live.tick(&live.control.balancer(), None))
        })
        .await
        .map_err(|e| StreamRefused::Failed(e.to_string()))?;
        let head = stream::iter([
            Ok(Event::default()
                .event("history")
                .retry(INTERVAL * 2)
                .data(history)),
            Ok(Event::default().event("tick").data(&*first)),
        ]);
        let rest = follow(ticks, self.closing.clone(), permit);
        Ok(Sse::new(head.chain(rest)).into_response())
    }
}

/// Every tick published after `ticks` was subscribed, until `closing` turns true. Holds the
/// stream's `permit` until it ends (the client leaving drops the stream).
fn follow(
    ticks: watch::Receiver<Option<Arc<str>>>,
    closing: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(
        (ticks, closing, permit),
        |(mut ticks, mut closing, permit)| async move {
            loop {
                tokio::select! {
                    changed = ticks.changed() => changed.ok()?,
                    _ = closing.wait_for(|c| *c) => return None,
                }
                let tick = ticks.borrow_and_update().clone();
                if let Some(tick) = tick {
                    let event = Event::default().event("tick").data(&*tick);
                    return Some((Ok(event), (ticks, closing, permit)));
                }
            }
        },
    )
}
