//! One request/response exchange with an origin, after the request head was written.
//!
//! The request body (client → origin) and the response (origin → client) run at the same
//! time: an origin may answer before it has read the whole body, and a client that sent
//! `Expect: 100-continue` waits for the interim response before sending its body.
//!
//! Both bodies are re-framed on the way ([`copy_body`]): a chunked body is decoded and
//! encoded again, so neither side ever receives framing the proxy did not read itself. A
//! malformed request body that fails before any response started is answered 400 by the
//! caller; a malformed response body closes the client connection without the last chunk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::access_log::media_type;
use crate::http::body::{copy_body, read_some, write_all, CopyError, Encode};
use crate::http::head::{response_framing, response_has_no_body, Framing, Head, HeadError};
use crate::http::rewrite::{client_response, Edits, FieldAction, ResponseFraming};

/// What the exchange needs to know about the request.
pub struct ExchangeRequest<'a> {
    pub method: &'a str,
    pub framing: Framing,
    /// The client may keep its connection after this response.
    pub client_keep_alive: bool,
    /// The client spoke HTTP/1.0: it gets no interim responses and no chunked coding.
    pub client_http10: bool,
    /// Set when the proxy starts draining: the response then closes the client connection.
    pub draining: &'a AtomicBool,
    /// Set when a reload removes the client's port: the response then closes it too.
    pub port_closing: tokio::sync::watch::Receiver<bool>,
    pub via: Option<&'a str>,
    pub idle: Duration,
    pub max_reply_header: usize,
    /// `http_reply_access` and `reply_header_*`; `None` when none are configured.
    pub reply_rules: Option<&'a dyn ReplyRules>,
    /// Keep the reply head in [`Delivered::reply`] (a log format's `%<h`).
    pub keep_reply_head: bool,
    /// `delay_pools`: the pace the origin's bytes are read at.
    pub throttle: Option<crate::delay::Limit>,
    /// `client_delay_pools`: the request body's reads from the client are paced.
    pub client_throttle: Option<crate::delay::Limit>,
    /// The request offered the origin an `Upgrade` (`http_upgrade_request_protocols`): a
    /// `101` answer switches the connection over.
    pub upgrade: bool,
}

/// What the configuration says about a reply, once its head is read.
pub trait ReplyRules: Sync {
    /// `http_reply_access`: false answers 403 instead of the reply.
    fn allows(&self, reply: &Head) -> bool;
    /// `reply_header_access` / `reply_header_replace` for one field.
    fn action(&self, reply: &Head, name: &[u8]) -> FieldAction<'_>;
    /// `reply_header_add`.
    fn additions(&self, reply: &Head) -> Vec<(String, String)>;
}

/// How the exchange went.
#[derive(Debug)]
pub enum Outcome {
    /// The response went to the client in full.
    Done(Delivered),
    /// Nothing reached the client: the caller may send an error page, or retry.
    NoResponse(Failure),
    /// Part of a response reached the client, then something failed: the client
    /// connection must be closed.
    Aborted(Delivered),
    /// The origin switched protocols (`101` to an offered `Upgrade`): nothing was sent to
    /// the client yet; the head and the bytes that came after it are the caller's to pass
    /// on before relaying both ways.
    Upgraded(Head, bytes::Bytes),
}

/// A response that (at least partly) reached the client.
#[derive(Debug, Default)]
pub struct Delivered {
    /// The reply head, when [`ExchangeRequest::keep_reply_head`].
    pub reply: Option<Head>,
    pub status: u16,
    pub bytes: u64,
    pub mime: Option<String>,
    pub client_reusable: bool,
    pub origin_reusable: bool,
    /// Its log line was written (by the exchange's `record`, before the last byte).
    pub logged: bool,
    /// The end was withheld because the line could not be written
    /// (`logfile_error_policy refuse`).
    pub unrecorded: bool,
}

/// Writes the log line of the response described, before its last byte goes to the client;
/// false withholds that byte (see [`crate::http::body::BeforeEnd`]).
pub type Record<'a> = &'a (dyn Fn(&Delivered) -> bool + Sync);

/// Why no response reached the client.
#[derive(Debug)]
pub enum Failure {
    /// The origin closed or reset the connection before sending a byte (a stale pooled
    /// connection looks like this).
    ClosedEarly,
    /// The origin failed after sending part of a head.
    ReadError,
    Timeout,
    InvalidResponse,
    /// The client went away before the response.
    ClientGone,
    /// `http_reply_access` denied the reply: nothing of it was sent, and the origin
    /// connection is not reusable (its body was not read).
    ReplyDenied,
    /// The client's body was malformed (chunked syntax) before any response started: the
    /// caller answers 400 and closes. The origin got an unfinished body, never the rest.
    MalformedBody(&'static str),
}

pub async fn exchange(
    client: &mut TcpStream,
    client_buf: &mut BytesMut,
    origin: &mut TcpStream,
    req: &ExchangeRequest<'_>,
    record: Record<'_>,
) -> Outcome {
    let (cr, mut cw) = client.split();
    let (or, mut ow) = origin.split();
    let mut or = crate::delay::Throttled::new(or, req.throttle.clone());
    let mut cr = crate::delay::Throttled::new(cr, req.client_throttle.clone());
    let has_body = req.framing != Framing::Length(0);
    // Set once a final response head starts towards the client: after that an error page
    // can no longer be sent.
    let responding = AtomicBool::new(false);
    let upload = async {
        if !has_body {
            return Ok(0);
        }
        let mut nothing = BytesMut::new();
        let encode = match req.framing {
            Framing::Chunked => Encode::Chunked,
            Framing::Length(_) | Framing::UntilClose => Encode::Identity,
        };
        copy_body(
            req.framing,
            encode,
            &mut cr,
            client_buf,
            &mut nothing,
            &mut ow,
            req.idle,
            &mut |_| true,
        )
        .await
        .map_err(|f| f.error)
    };
    let download = download(&mut or, &mut cw, req, &responding, record);
    tokio::pin!(upload, download);
    let mut uploaded: Option<Result<u64, CopyError>> = None;
    let outcome = loop {
        tokio::select! {
            result = &mut upload, if uploaded.is_none() => {
                if let Err(CopyError::Malformed(why)) = result {
                    if !responding.load(Ordering::Relaxed) {
                        return Outcome::NoResponse(Failure::MalformedBody(why));
                    }
                    return Outcome::Aborted(Delivered::default());
                }
                let client_failed = matches!(
                    result,
                    Err(CopyError::Source(_) | CopyError::SourceTimeout | CopyError::Malformed(_))
                );
                if client_failed {
                    // The origin waits for a body that will never come: give up now.
                    return Outcome::NoResponse(Failure::ClientGone);
                }
                uploaded = Some(result);
            }
            outcome = &mut download => break outcome,
        }
    };
    let upload_complete = matches!(uploaded, Some(Ok(_))) || !has_body;
    match outcome {
        Outcome::Done(mut d) if !upload_complete => {
            // The client's unread body is still on its connection, and the origin's view
            // of the request is incomplete: neither connection can carry another message.
            d.client_reusable = false;
            d.origin_reusable = false;
            Outcome::Done(d)
        }
        other => other,
    }
}

async fn download<R, W>(
    origin: &mut R,
    client: &mut W,
    req: &ExchangeRequest<'_>,
    responding: &AtomicBool,
    record: Record<'_>,
) -> Outcome
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut obuf = BytesMut::with_capacity(16 * 1024);
    let mut sent = 0u64;
    let head = loop {
        match Head::parse_response(&mut obuf, req.max_reply_header) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                // Interim responses (100 Continue, 103 Early Hints) go to the client as they
                // are, except to an HTTP/1.0 client, which cannot read them (RFC 9110 §15.2).
                if req.client_http10 {
                    continue;
                }
                let mut out = BytesMut::new();
                client_response_interim(&h, &mut out);
                if write_all(client, &out, req.idle).await.is_err() {
                    return Outcome::Aborted(Delivered {
                        status: h.status,
                        bytes: sent,
                        ..Default::default()
                    });
                }
                sent += out.len() as u64;
            }
            Ok(Some(h)) if h.status == 101 && req.upgrade => {
                return Outcome::Upgraded(h, obuf.split().freeze());
            }
            Ok(Some(h)) if h.status == 101 => {
                // No Upgrade was offered, so a 101 is a protocol violation.
                return Outcome::NoResponse(Failure::InvalidResponse);
            }
            Ok(Some(h)) => break h,
            Ok(None) => match read_some(origin, &mut obuf, req.idle).await {
                Ok(0) | Err(CopyError::Source(_)) if obuf.is_empty() && sent == 0 => {
                    return Outcome::NoResponse(Failure::ClosedEarly)
                }
                Ok(0) | Err(_) if sent > 0 => {
                    return Outcome::Aborted(Delivered {
                        bytes: sent,
                        ..Default::default()
                    })
                }
                Err(CopyError::SourceTimeout) => return Outcome::NoResponse(Failure::Timeout),
                Ok(0) | Err(_) => return Outcome::NoResponse(Failure::ReadError),
                Ok(_) => {}
            },
            Err(HeadError::TooLarge | HeadError::Invalid(_)) => {
                return Outcome::NoResponse(Failure::InvalidResponse)
            }
        }
    };
    let framing = match response_framing(&head, req.method) {
        Ok(f) => f,
        Err(_) => return Outcome::NoResponse(Failure::InvalidResponse),
    };
    // A chunked body goes to an HTTP/1.0 client decoded, ended by closing the connection.
    let (fields, encode) = match framing {
        Framing::Length(_) if response_has_no_body(&head, req.method) => {
            (ResponseFraming::NoBody, Encode::Identity)
        }
        Framing::Length(n) => (ResponseFraming::Length(n), Encode::Identity),
        Framing::Chunked if !req.client_http10 => (ResponseFraming::Chunked, Encode::Chunked),
        Framing::Chunked | Framing::UntilClose => (ResponseFraming::Close, Encode::Identity),
    };
    let client_reusable = req.client_keep_alive
        && fields != ResponseFraming::Close
        && !req.draining.load(Ordering::Relaxed)
        && !*req.port_closing.borrow();
    if req.reply_rules.is_some_and(|rules| !rules.allows(&head)) {
        return Outcome::NoResponse(Failure::ReplyDenied);
    }
    let mut out = BytesMut::with_capacity(head.wire_len() + 128);
    let decide = |name: &[u8]| match req.reply_rules {
        Some(rules) => rules.action(&head, name),
        None => FieldAction::Keep,
    };
    let edits = Edits {
        decide: req.reply_rules.is_some().then_some(&decide as _),
        add: req
            .reply_rules
            .map(|rules| rules.additions(&head))
            .unwrap_or_default(),
    };
    client_response(&head, req.via, client_reusable, fields, &edits, &mut out);
    let kept_head = req.keep_reply_head.then(|| head.clone());
    responding.store(true, Ordering::Relaxed);
    let mut delivered = Delivered {
        status: head.status,
        bytes: sent,
        mime: head.value("content-type").and_then(media_type),
        client_reusable,
        reply: kept_head,
        ..Default::default()
    };
    let mut logged = false;
    let mut before_end = |n: u64| {
        logged = true;
        record(&Delivered {
            status: head.status,
            bytes: sent + n,
            mime: delivered.mime.clone(),
            reply: delivered.reply.clone(),
            ..Default::default()
        })
    };
    let copied = copy_body(
        framing,
        encode,
        origin,
        &mut obuf,
        &mut out,
        client,
        req.idle,
        &mut before_end,
    )
    .await;
    delivered.logged = logged;
    match copied {
        Ok(n) => {
            delivered.bytes += n;
            delivered.origin_reusable =
                framing != Framing::UntilClose && head.wants_keep_alive() && obuf.is_empty();
            Outcome::Done(delivered)
        }
        Err(failed) if failed.written == 0 && sent == 0 && origin_failed(&failed.error) => {
            // Nothing reached the client (the head waits to go out with the first body
            // bytes): it can still get an error page instead of a silent close.
            tracing::debug!(error = ?failed.error, "response body failed before any byte was sent");
            Outcome::NoResponse(Failure::InvalidResponse)
        }
        Err(failed) => {
            delivered.bytes += failed.written;
            delivered.client_reusable = false;
            delivered.unrecorded = matches!(failed.error, CopyError::Unrecorded);
            Outcome::Aborted(delivered)
        }
    }
}

/// Whether a body copy from the origin failed on the origin's side (not the client's).
fn origin_failed(e: &CopyError) -> bool {
    matches!(
        e,
        CopyError::Malformed(_) | CopyError::Source(_) | CopyError::SourceTimeout
    )
}

fn client_response_interim(head: &Head, out: &mut BytesMut) {
    use bytes::BufMut;
    out.put_slice(format!("HTTP/1.1 {} ", head.status).as_bytes());
    out.put_slice(head.reason());
    out.put_slice(b"\r\n");
    for (name, value) in head.fields() {
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}
