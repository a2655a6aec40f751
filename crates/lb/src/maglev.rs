//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with a fixed, documented seed.
//!
//! The base table is built over every *registered* target of a group, so each target owns
//! either ⌊M/N⌋ or ⌈M/N⌉ of the M slots (M prime, ≥ 100 × N: every share within 1 % of 1/N).
//! Health does not rebuild the base table: a slot whose owner may not take new flows resolves
//! to the next slot's eligible owner (its *preference walk*). So a target that fails moves
//! only its own flows, and every node with the same registered set and the same view of
//! health maps a flow to the same target, on every restart.
//!
//! The hash is written here rather than taken from a crate because the exact function is part
//! of the contract (all nodes and all releases must agree), and FNV-1a plus a SplitMix64
//! finaliser is ten lines with a published definition.

/// The seed of every hash here. Changing it remaps every flow: never do it casually.
pub const SEED: u64 = 0x70f1_ee7d_5eed_2026;

/// The default table size: prime, and ≥ 100 × targets up to 655 targets.
pub const DEFAULT_SIZE: usize = 65537;

/// FNV-1a over `bytes`, started from `seed`, then SplitMix64's finaliser for avalanche.
pub fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The smallest prime ≥ max(DEFAULT_SIZE, 100 × targets).
pub fn table_size(targets: usize) -> usize {
    let mut n = DEFAULT_SIZE.max(targets.saturating_mul(100));
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// Slot → index into the target list the table was built from.
#[derive(Debug, Clone)]
pub struct Table {
    slots: Vec<u32>,
}

impl Table {
    /// Builds the table for targets named by `keys` (stable identities, e.g. "ip:port").
    /// Index `i` in the table means `keys[i]`; callers sort the keys so that every node builds
    /// the same table for the same set.
    pub fn build(keys: &[String]) -> Table {
        let m = table_size(keys.len());
        if keys.is_empty() {
            return Table { slots: Vec::new() };
        }
        let perms: Vec<(u64, u64)> = keys
            .iter()
            .map(|k| {
                let offset = hash(SEED, k.as_bytes()) % m as u64;
                let skip = hash(SEED ^ 0x5bd1_e995, k.as_bytes()) % (m as u64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; keys.len()];
        let mut slots = vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in perms.iter().enumerate() {
                let mut c = ((offset + next[i] * skip) % m as u64) as usize;
                while slots[c] != u32::MAX {
                    next[i] += 1;
                    c = ((offset + next[i] * skip) % m as u64) as usize;
                }
                slots[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Table { slots }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot a flow hash falls into.
    pub fn slot(&self, flow_hash: u64) -> usize {
        (flow_hash % self.slots.len() as u64) as usize
    }

    /// The owner of `slot`.
    pub fn owner(&self, slot: usize) -> usize {
        self.slots[slot] as usize
    }

    /// Distinct owners met walking forward from `slot`, in order: the flow's preference
    /// order over targets.
    pub fn walk(&self, slot: usize) -> impl Iterator<Item = usize> + '_ {
        let n = self.slots.len();
        let mut seen = Vec::new();
        (0..n).filter_map(move |i| {
            let owner = self.slots[(slot + i) % n] as usize;
            if seen.contains(&owner) {
                None
            } else {
                seen.push(owner);
                Some(owner)
            }
        })
    }

    /// For every slot, the first owner of its preference walk that `eligible` accepts
    /// (`u32::MAX` when none does): the table the data path reads.
    pub fn resolve(&self, eligible: &[bool]) -> Vec<u32> {
        let n = self.slots.len();
        let mut out = vec![u32::MAX; n];
        if n == 0 || !eligible.iter().any(|e| *e) {
            return out;
        }
        // Walk backwards once around (twice, to wrap): each slot takes its own owner when
        // eligible, else the answer of the slot after it.
        let mut carry = u32::MAX;
        for i in (0..2 * n).rev() {
            let owner = self.slots[i % n];
            if eligible[owner as usize] {
                carry = owner;
            }
            out[i % n] = carry;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("127.10.{}.{}:3128", i / 250, i % 250 + 1))
            .collect()
    }

    #[test]
    fn the_hash_is_fixed() {
        // Pinned: a change here remaps every flow of every deployment.
        assert_eq!(hash(SEED, b"127.20.0.5:40000"), 0x10af_47be_f656_1389);
        assert_ne!(hash(SEED, b"a"), hash(SEED, b"b"));
        assert_eq!(table_size(1), 65537);
        assert_eq!(table_size(1000), 100003);
    }

    #[test]
    fn every_share_is_within_one_percent_of_one_nth() {
        for n in [2, 3, 5, 10, 64, 100, 333, 655, 1000] {
            let table = Table::build(&keys(n));
            let mut counts = vec![0usize; n];
            for s in 0..table.len() {
                counts[table.owner(s)] += 1;
            }
            let ideal = table.len() as f64 / n as f64;
            for (i, c) in counts.iter().enumerate() {
                let off = (*c as f64 - ideal).abs() / ideal;
                assert!(
                    off <= 0.01,
                    "n={n} target {i}: {c} slots, ideal {ideal:.1} ({:.2}%)",
                    off * 100.0
                );
            }
        }
    }

    #[test]
    fn losing_one_target_moves_only_its_keys() {
        for n in [2, 5, 50, 1000] {
            let table = Table::build(&keys(n));
            let all = vec![true; n];
            let before = table.resolve(&all);
            for gone in [0, n / 2, n - 1] {
                let mut eligible = all.clone();
                eligible[gone] = false;
                let after = table.resolve(&eligible);
                let mut moved_to = vec![0usize; n];
                for s in 0..table.len() {
                    if before[s] as usize != gone {
                        assert_eq!(
                            before[s], after[s],
                            "n={n}: slot {s} moved though its target stayed"
                        );
                    } else {
                        assert_ne!(after[s] as usize, gone);
                        moved_to[after[s] as usize] += 1;
                    }
                }
                if n == 50 {
                    // The lost target's flows spread over the others rather than piling on one.
                    let most = *moved_to.iter().max().unwrap();
                    assert!(
                        most < table.len() / n / 4,
                        "n={n}: {most} of its slots went to one target"
                    );
                }
            }
        }
    }

    #[test]
    fn same_keys_same_table_and_walks_are_distinct() {
        let a = Table::build(&keys(7));
        let b = Table::build(&keys(7));
        assert_eq!(a.slots, b.slots);
        let walk: Vec<usize> = a.walk(a.slot(hash(SEED, b"flow"))).collect();
        assert_eq!(walk.len(), 7);
        let mut sorted = walk.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 7);
        assert_eq!(
            a.resolve(&[false; 7])
                .iter()
                .filter(|s| **s != u32::MAX)
                .count(),
            0
        );
    }
}
