//! A small map whose entries expire, bounded so that a client asking for endless new keys
//! costs bounded memory: when full, expired entries go, then all of them. Used for the
//! resolver's failed names, the Basic scheme's accepted credentials and external ACLs'
//! answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct ExpiringMap<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
    max: usize,
}

impl<V: Clone> ExpiringMap<V> {
    pub fn new(max: usize) -> ExpiringMap<V> {
        ExpiringMap {
            entries: Mutex::default(),
            max,
        }
    }

    /// The value for `key` if it has not expired.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (until, value) = entries.get(key)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    /// Keeps `value` for `ttl`.
    pub fn insert(&self, key: String, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now() + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let map = ExpiringMap::new(2);
        map.insert("a".into(), 1, Duration::from_secs(60));
        map.insert("gone".into(), 2, Duration::ZERO);
        assert_eq!(map.get("a"), Some(1));
        assert_eq!(map.get("gone"), None, "expired");
        // Full: the expired entry makes room, "a" stays.
        map.insert("b".into(), 3, Duration::from_secs(60));
        assert_eq!((map.get("a"), map.get("b")), (Some(1), Some(3)));
        // Full of live entries: all go.
        map.insert("c".into(), 4, Duration::from_secs(60));
        assert_eq!((map.get("a"), map.get("c")), (None, Some(4)));
    }
}
