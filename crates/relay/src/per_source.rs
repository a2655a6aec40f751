//! Per-source connection limits, shared by the balancer's nodes and the proxy: one client
//! address may hold at most `max` open connections; the next is refused at once (closed)
//! until one of its own ends, so a single client cannot take every slot of a node or a
//! proxy. Counts live in a map that only ever holds sources with open connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per source address, capped.
#[derive(Debug)]
pub struct PerSourceLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in its source's count; given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    limit: Arc<PerSourceLimit>,
    source: IpAddr,
}

impl PerSourceLimit {
    /// At most `max` (at least 1) open connections per source.
    pub fn new(max: usize) -> Arc<PerSourceLimit> {
        Arc::new(PerSourceLimit {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection from `source`, or `None` when it already holds `max`.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(source).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            limit: Arc::clone(self),
            source,
        })
    }

    /// Open connections from `source` now.
    pub fn open(&self, source: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_max_slots_and_gets_them_back() {
        let limit = PerSourceLimit::new(2);
        let a: IpAddr = "127.20.0.1".parse().unwrap();
        let b: IpAddr = "127.20.0.2".parse().unwrap();
        let first = limit.admit(a).unwrap();
        let _second = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none(), "a third from the same source");
        assert!(limit.admit(b).is_some(), "another source is not affected");
        drop(first);
        assert_eq!(limit.open(a), 1);
        assert!(limit.admit(a).is_some());
        assert_eq!(PerSourceLimit::new(0).max(), 1);
    }

    #[test]
    fn the_map_forgets_sources_with_nothing_open() {
        let limit = PerSourceLimit::new(1);
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x7f14_0000 + i));
            drop(limit.admit(ip).unwrap());
        }
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
