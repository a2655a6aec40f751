//! The checks behind each fuzz target, one module per parser. Each `run` feeds one input to
//! the parser and panics when an invariant breaks (not only when the parser panics):
//!
//! - [`head`]: `Head::parse_request`, then framing, the request target and the origin
//!   request the proxy would send;
//! - [`chunked`]: `ChunkedScanner`, split into pieces, and on valid encodings built from the
//!   input;
//! - [`proxy_header`]: `proxy_protocol::parse`, the buffer-level step of the PROXY header
//!   reader;
//! - [`squid_conf`]: squid.conf text, with `include`s confined to a temporary directory;
//! - [`stack`]: the stack file, and the `check` and `render` of what validates;
//! - [`tls_hello`]: `sni::peek`, the ClientHello reader of `ssl_bump peek`;
//! - [`log_format`]: `logformat` text, and rendering what parses.
//!
//! The targets in `fuzz_targets/` are one line each, so the checks do not depend on the
//! engine.

pub mod chunked;
pub mod head;
pub mod log_format;
pub mod proxy_header;
pub mod squid_conf;
pub mod stack;
pub mod tls_hello;
