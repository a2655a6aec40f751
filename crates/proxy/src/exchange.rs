//! One request/response exchange with an origin, after the request head was written.
//!
//! The request body (client → origin) and the response (origin → client) run at the same
//! time: an origin may answer before it has read the whole body, and a client that sent
//! `Expect: 100-continue` waits for the interim response before sending its body.

use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::access_log::media_type;
use crate::http::body::{copy_body, read_some, write_all, CopyError};
use crate::http::head::{response_framing, Framing, Head, HeadError};
use crate::http::rewrite::client_response;

/// What the exchange needs to know about the request.
pub struct ExchangeRequest<'a> {
    pub method: &'a str,
    pub framing: Framing,
    /// The client may keep its connection after this response.
    pub client_keep_alive: bool,
    /// Set when the proxy starts draining: the response then closes the client connection.
    pub draining: &'a std::sync::atomic::AtomicBool,
    pub via: Option<&'a str>,
    pub idle: Duration,
    pub max_reply_header: usize,
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
}

/// A response that (at least partly) reached the client.
#[derive(Debug, Default)]
pub struct Delivered {
    pub status: u16,
    pub bytes: u64,
    pub mime: Option<String>,
    pub client_reusable: bool,
    pub origin_reusable: bool,
}

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
    /// The client went away (or sent a malformed body) before the response.
    ClientGone,
}

pub async fn exchange(
    client: &mut TcpStream,
    client_buf: &mut BytesMut,
    origin: &mut TcpStream,
    req: &ExchangeRequest<'_>,
) -> Outcome {
    let (mut cr, mut cw) = client.split();
    let (mut or, mut ow) = origin.split();
    let has_body = req.framing != Framing::Length(0);
    let upload = async {
        if !has_body {
            return Ok(0);
        }
        let mut nothing = BytesMut::new();
        copy_body(
            req.framing,
            &mut cr,
            client_buf,
            &mut nothing,
            &mut ow,
            req.idle,
        )
        .await
        .map_err(|f| f.error)
    };
    let download = download(&mut or, &mut cw, req);
    tokio::pin!(upload, download);
    let mut uploaded: Option<Result<u64, CopyError>> = None;
    let outcome = loop {
        tokio::select! {
            result = &mut upload, if uploaded.is_none() => {
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

async fn download<R, W>(origin: &mut R, client: &mut W, req: &ExchangeRequest<'_>) -> Outcome
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut obuf = BytesMut::with_capacity(16 * 1024);
    let mut sent = 0u64;
    let head = loop {
        match Head::parse_response(&mut obuf, req.max_reply_header) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                // Interim responses (100 Continue, 103 Early Hints) go to the client as they are.
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
            Ok(Some(h)) if h.status == 101 => {
                // Upgrade was removed from the request, so a 101 is a protocol violation.
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
    let client_reusable = req.client_keep_alive
        && framing != Framing::UntilClose
        && !req.draining.load(std::sync::atomic::Ordering::Relaxed);
    let mut out = BytesMut::with_capacity(head.wire_len() + 128);
    client_response(&head, req.via, client_reusable, &mut out);
    let mut delivered = Delivered {
        status: head.status,
        bytes: sent,
        mime: head.value("content-type").and_then(media_type),
        client_reusable,
        origin_reusable: false,
    };
    match copy_body(framing, origin, &mut obuf, &mut out, client, req.idle).await {
        Ok(n) => {
            delivered.bytes += n;
            delivered.origin_reusable =
                framing != Framing::UntilClose && head.wants_keep_alive() && obuf.is_empty();
            Outcome::Done(delivered)
        }
        Err(failed) => {
            delivered.bytes += failed.written;
            delivered.client_reusable = false;
            Outcome::Aborted(delivered)
        }
    }
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
