//! A minimal HTTP/1.1 client for the admin API: one request per connection
//! (`Connection: close`) over TCP or the Unix socket, a deadline over the whole exchange, a
//! bounded answer.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The longest answer read (a long activity history fits many times over).
const MAX_BODY: usize = 64 << 20;

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    /// `STATE_DIR/admin.sock`.
    Unix(PathBuf),
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::Tcp(addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the address (or no socket is there): the server is not running.
    #[error("connection refused")]
    Refused,
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(String),
}

/// An answer: status, content type, body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The API's error message when the body is `{"error": ...}`, else the body itself.
    pub fn error_message(&self) -> String {
        match serde_json::from_slice::<crate::view::ErrorView>(&self.body) {
            Ok(e) => e.error,
            Err(_) => format!("HTTP {}: {}", self.status, self.text().trim()),
        }
    }
}

/// One request: `method path` to `endpoint`, with a bearer `token` and a JSON `body` if
/// given.
pub async fn request(
    endpoint: impl Into<Endpoint>,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let endpoint = endpoint.into();
    let exchange = async {
        let refused = |e: io::Error| match e.kind() {
            io::ErrorKind::ConnectionRefused => ClientError::Refused,
            // No socket file: nobody serves there.
            io::ErrorKind::NotFound if matches!(endpoint, Endpoint::Unix(_)) => {
                ClientError::Refused
            }
            _ => ClientError::Connect(e),
        };
        match &endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(refused)?;
                exchange(stream, &addr.to_string(), method, path, token, body).await
            }
            // Any name does on the socket (it checks no Host); this is the usual one.
            Endpoint::Unix(socket) => {
                let stream = UnixStream::connect(socket).await.map_err(refused)?;
                exchange(stream, "localhost", method, path, token, body).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn exchange<S>(
    stream: S,
    host: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<Response, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    // The connection task ends with the exchange (Connection: close); if the caller's
    // deadline drops this future first, aborting it closes the socket.
    let conn = AbortOnDrop(tokio::spawn(conn));
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .header(header::CONNECTION, "close");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Http(e.to_string()))?)
        }
        None => Bytes::new(),
    };
    let request = builder
        .body(Full::new(payload))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    drop(conn);
    Ok(Response {
        status,
        content_type,
        body,
    })
}

/// Aborts its task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
