//! An HTTP/1.1 origin server (hyper) on a loopback address, plain or TLS, that records every
//! request: who connected (the proxy's source address) and which headers arrived.
//!
//! Routes: `/small` (100 bytes), `/bytes/N` (N bytes, streamed), `/echo` (the request body
//! back), `/headers` (the request head as text), `/slow/MS` (answers after MS ms),
//! `/drip/MS` (the head at once, the 5-byte body after MS ms), `/chunked` (a chunked reply), `/status/N`; anything else: a short HTML page.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running origin; stops when dropped.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// PEM of the self-signed certificate, for TLS origins.
    pub cert_pem: Option<String>,
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

impl Origin {
    /// A plain HTTP origin on `ip` (port chosen by the kernel).
    pub fn start(ip: &str) -> Origin {
        Self::start_inner(ip, 0, None)
    }

    /// A TLS origin whose certificate is valid for `ip` (port chosen by the kernel).
    pub fn start_tls(ip: &str) -> Origin {
        Self::start_tls_on(ip, 0)
    }

    /// A TLS origin on `ip:port` (443 for proxies that allow CONNECT only to SSL_ports, as
    /// Squid's stock configuration and the built-in stack do; binding it needs root).
    pub fn start_tls_on(ip: &str, port: u16) -> Origin {
        crate::init_crypto();
        let cert = rcgen::generate_simple_self_signed(vec![ip.to_string()]).expect("certificate");
        let cert_pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("tls config");
        let mut origin = Self::start_inner(ip, port, Some(Arc::new(config)));
        origin.cert_pem = Some(cert_pem);
        origin
    }

    fn start_inner(ip: &str, port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Origin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind((ip, port)))
            .unwrap_or_else(|e| panic!("origin cannot bind {ip}: {e}"));
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_in = seen.clone();
        runtime.spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let seen = seen_in.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, peer, seen.clone()));
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            seen,
            runtime: Some(runtime),
            cert_pem: None,
        }
    }

    /// `http://ADDR`, or `https://ADDR` for a TLS origin (no trailing slash).
    pub fn url(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        peer,
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: headers.clone(),
    });
    let response = |status: u16, ctype: &str, body: Body| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(body)
            .expect("response")
    };
    let reply = match path.as_str() {
        "/small" => response(200, "text/plain", full(vec![b'x'; 100])),
        // The request body streams straight back, frame by frame.
        "/echo" => response(200, "application/octet-stream", req.into_body().boxed()),
        // Reads the whole body before answering, so hyper sends `100 Continue` first.
        "/upload" => match req.into_body().collect().await {
            Ok(body) => response(
                200,
                "text/plain",
                full(format!("received {} bytes", body.to_bytes().len())),
            ),
            Err(_) => response(400, "text/plain", full("")),
        },
        "/headers" => {
            let text: String = headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
            response(200, "text/plain", full(text))
        }
        "/chunked" => {
            let pieces = ["first ", "second ", "third\n"]
                .into_iter()
                .map(|p| Frame::data(Bytes::from(p)));
            response(200, "text/plain", Frames(pieces).boxed())
        }
        p if p.starts_with("/bytes/") => {
            let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'b'; 64 * 1024]);
            let frames = (0..n.div_ceil(chunk.len())).map(move |i| {
                let len = chunk.len().min(n - i * chunk.len());
                Frame::data(chunk.slice(..len))
            });
            let mut r = response(200, "application/octet-stream", Frames(frames).boxed());
            r.headers_mut().insert("content-length", n.into());
            r
        }
        p if p.starts_with("/drip/") => {
            let ms: u64 = p["/drip/".len()..].parse().unwrap_or(0);
            let sleep = Box::pin(tokio::time::sleep(Duration::from_millis(ms)));
            let mut r = response(
                200,
                "text/plain",
                Delayed {
                    sleep,
                    data: Some(Bytes::from("drip\n")),
                }
                .boxed(),
            );
            r.headers_mut().insert("content-length", 5.into());
            r
        }
        p if p.starts_with("/slow/") => {
            let ms: u64 = p["/slow/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            response(200, "text/plain", full("slow\n"))
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            response(code, "text/plain", full(""))
        }
        _ => response(
            200,
            "text/html; charset=utf-8",
            full("<html><body>hello from origin</body></html>\n"),
        ),
    };
    Ok(reply)
}

/// A body made of frames from an iterator (hyper sends it chunked unless a length is set).
struct Frames<I>(I);

impl<I: Iterator<Item = Frame<Bytes>> + Unpin> hyper::body::Body for Frames<I> {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::task::Poll::Ready(self.0.next().map(Ok))
    }
}

/// A body whose only frame comes after a delay (the head goes out before it).
struct Delayed {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
}

impl hyper::body::Body for Delayed {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.sleep.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }
}
