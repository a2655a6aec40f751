//! HTTP/1 on the wire: heads, body framing, chunked scanning, and header rewriting.
//!
//! Written on `httparse` rather than a full HTTP stack (hyper) because a Squid-compatible
//! proxy must answer malformed requests with Squid's error pages and log lines, enforce
//! `request_header_max_size` exactly, reject ambiguous framing, and pass bodies through
//! verbatim — hyper's server answers parse errors itself and re-frames bodies.

pub mod body;
pub mod chunked;
pub mod head;
pub mod rewrite;
pub mod target;
