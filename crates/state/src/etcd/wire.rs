//! etcd's JSON gateway on the wire: the few response shapes this store reads, and the
//! encoding rules of the gateway (proto3 JSON): keys and values are base64, int64 values are
//! JSON strings, and a field at its default value (0, false, empty) is left out.
//!
//! Requests are built with `serde_json::json!` where they are sent; only responses get types.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer};

/// Base64 of `bytes`, as the gateway wants keys, values and range ends.
pub(super) fn b64(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// The `range_end` that makes a range of every key starting with `prefix` (etcd's rule: the
/// prefix with its last byte incremented).
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: "\0" means "to the end of the key space".
    vec![0]
}

/// An int64 as the gateway sends it: a string, or a number from other encoders; absent is 0.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(u64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Base64 bytes.
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD.decode(s).map_err(serde::de::Error::custom)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Header {
    #[serde(default, deserialize_with = "int")]
    pub revision: u64,
    #[serde(default, deserialize_with = "int")]
    pub raft_term: u64,
    #[serde(default, deserialize_with = "int")]
    pub member_id: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct KeyValue {
    #[serde(default, deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int")]
    pub create_revision: u64,
    #[serde(default, deserialize_with = "int")]
    pub mod_revision: u64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<OpResponse>,
}

/// One operation's answer inside a transaction; only ranges are read.
#[derive(Debug, Default, Deserialize)]
pub(super) struct OpResponse {
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LeaseGrantResponse {
    #[serde(default, rename = "ID", deserialize_with = "int")]
    pub id: u64,
    #[serde(default)]
    pub error: String,
}

/// Streaming RPCs (keep-alive, watch) come as `{"result": ...}` lines, or `{"error": ...}`.
#[derive(Debug, Deserialize)]
pub(super) struct StreamItem<T> {
    pub result: Option<T>,
    pub error: Option<GatewayError>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct KeepAliveResponse {
    #[serde(default, rename = "TTL", deserialize_with = "int")]
    pub ttl: u64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WatchResponse {
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, deserialize_with = "int")]
    pub compact_revision: u64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Event {
    /// `PUT` is the default and left out; `DELETE` is named.
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub kv: KeyValue,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct StatusResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default, deserialize_with = "int")]
    pub leader: u64,
    #[serde(default)]
    pub version: String,
}

/// What the gateway answers instead of a result: the gRPC status.
#[derive(Debug, Default, Deserialize)]
pub(super) struct GatewayError {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_every_key_that_starts_with_it() {
        assert_eq!(prefix_end("/p/"), b"/p0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }

    #[test]
    fn int64_strings_and_missing_defaults_decode() {
        let r: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"3","raft_term":"2"},"responses":[{"response_put":{}},{"response_range":{"kvs":[{"key":"L3AvYQ==","create_revision":"2","mod_revision":"2","version":"1","value":"djE="}],"count":"1"}}]}"#,
        )
        .unwrap();
        assert!(!r.succeeded, "false is left out");
        assert_eq!(r.header.revision, 3);
        let kv = &r.responses[1].response_range.as_ref().unwrap().kvs[0];
        assert_eq!(kv.value.as_slice(), &b"v1"[..]);
        assert_eq!(kv.mod_revision, 2);
    }
}
