//! A hasher for the integer keys of the inspector's hot maps (socket
//! inodes, pids).
//!
//! A snapshot of a server with 100k connections looks up every connection's
//! inode, and the standard SipHash costs more than the rest of that loop.
//! The keys are kernel-chosen integers, not attacker-chosen strings, so
//! HashDoS resistance buys nothing here; a multiply by an odd constant
//! (Fibonacci hashing) spreads sequential inodes over the high bits the
//! table uses for its control bytes, and a fold brings them down for the
//! bucket index.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

/// 2^64 / φ, odd.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-integer keys; correct, if not fast.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(GOLDEN);
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_i32(&mut self, value: i32) {
        // Bit pattern, not value: negative pids do not occur anyway.
        self.write_u64(u64::from(value as u32));
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;
pub(crate) type IntSet<K> = HashSet<K, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_inodes_hash_to_distinct_values() {
        let hashes: IntSet<u64> = (1_000_000u64..1_010_000)
            .map(|inode| {
                let mut hasher = IntHasher::default();
                hasher.write_u64(inode);
                hasher.finish()
            })
            .collect();
        assert_eq!(hashes.len(), 10_000);
    }

    #[test]
    fn an_int_map_finds_what_was_inserted() {
        let mut map: IntMap<u64, i32> = IntMap::default();
        for inode in 0..1000u64 {
            map.insert(inode * 7, i32::try_from(inode).expect("small"));
        }
        assert_eq!(map.get(&(700 * 7)), Some(&700));
        assert_eq!(map.get(&1), None);
    }
}
