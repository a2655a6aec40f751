//! HTTP/1 on the wire: heads, body framing, the chunked coding, and header rewriting.
//!
//! Written on `httparse` rather than a full HTTP stack (hyper) because a Squid-compatible
//! proxy must answer malformed requests with Squid's error pages and log lines, enforce
//! `request_header_max_size` exactly, reject ambiguous framing with Squid's statuses, and
//! stream bodies through a stricter chunked decoder than hyper's — hyper's server answers
//! parse errors itself. Bodies are re-framed ([`body`], [`chunked`]): the next hop only ever
//! sees framing the proxy wrote.

pub mod body;
pub mod chunked;
pub mod head;
pub mod rewrite;
pub mod target;
