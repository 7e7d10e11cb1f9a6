//! Who compacts what: a pure, deterministic split of partitions over the live compactors.
//!
//! Rendezvous (highest random weight) hashing: every node scores every partition with a
//! stable hash of (node id, partition), and the highest score owns it. Every node that sees
//! the same set of live compactors (from gossip) computes the same owner for every partition,
//! with no coordination; when a node leaves, only its partitions move (each to the node that
//! scored second), and when a node joins it takes only the partitions it now scores highest.
//!
//! The hash is FNV-1a with a SplitMix64 finalizer, written out here so the split never
//! changes with a Rust release or a process restart (std's `RandomState` does both). Two nodes
//! briefly disagreeing about the live set (gossip converging) may both run a job; the catalog's
//! swap rule (every input must still be live) makes the second swap void, so that costs work,
//! never correctness.

use crate::plan::{Job, PartitionKey};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Separates the hashed fields; ids and names never contain it (they are ASCII).
const SEPARATOR: u8 = 0xff;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// SplitMix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// Returns the stable score of `node_id` for `partition`.
fn score(node_id: &str, partition: &PartitionKey) -> u64 {
    let mut hash = fnv1a(FNV_OFFSET, node_id.as_bytes());
    hash = fnv1a(hash, &[SEPARATOR]);
    hash = fnv1a(hash, partition.table.database.as_bytes());
    hash = fnv1a(hash, &[SEPARATOR]);
    hash = fnv1a(hash, partition.table.measurement.as_bytes());
    hash = fnv1a(hash, &[SEPARATOR]);
    hash = fnv1a(hash, &partition.day_start_ns.to_le_bytes());
    mix(hash)
}

/// Returns the node among `live_nodes` that owns `partition`, or `None` if there is none.
///
/// The answer depends only on the set of ids (not their order; duplicates are harmless):
/// ties of the score, vanishingly rare, go to the greater id.
pub fn owner_of<'a>(live_nodes: &'a [String], partition: &PartitionKey) -> Option<&'a str> {
    live_nodes
        .iter()
        .map(|node| (score(node, partition), node.as_str()))
        .max()
        .map(|(_, node)| node)
}

/// Keeps the jobs whose partition `node_id` owns among `live_nodes` (which should include
/// `node_id` itself; if it does not, the node owns nothing).
pub fn jobs_owned_by(jobs: Vec<Job>, node_id: &str, live_nodes: &[String]) -> Vec<Job> {
    jobs.into_iter()
        .filter(|job| owner_of(live_nodes, &job.partition()) == Some(node_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arc_storage::TableId;
    use proptest::prelude::*;

    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    fn partition(measurement: &str, day: i64) -> PartitionKey {
        PartitionKey {
            table: TableId::new("db", measurement),
            day_start_ns: day * DAY,
        }
    }

    fn nodes(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn test_should_pin_the_hash() {
        // The split must not change between releases: a changed value here moves every
        // partition of a running cluster at upgrade.
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        let live = nodes(&["c1", "c2", "c3"]);
        let owners: Vec<&str> = (0..8)
            .map(|day| owner_of(&live, &partition("cpu", day)).unwrap())
            .collect();
        assert_eq!(owners, ["c1", "c1", "c2", "c2", "c3", "c3", "c3", "c2"]);
    }

    #[test]
    fn test_should_have_no_owner_without_nodes() {
        assert_eq!(owner_of(&[], &partition("cpu", 1)), None);
    }

    #[test]
    fn test_should_spread_partitions_over_nodes() {
        let live = nodes(&["c1", "c2", "c3"]);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for day in 0..3000 {
            *counts
                .entry(owner_of(&live, &partition("cpu", day)).unwrap())
                .or_default() += 1;
        }
        for (node, count) in counts {
            assert!((800..1200).contains(&count), "{node} owns {count} of 3000");
        }
    }

    proptest! {
        #[test]
        fn prop_each_partition_has_one_owner_whatever_the_order(
            ids in proptest::collection::btree_set("[a-z]{1,6}", 1..8),
            measurement in "[a-z]{1,8}",
            day in -1000i64..100_000,
        ) {
            let live: Vec<String> = ids.into_iter().collect();
            let key = partition(&measurement, day);
            let owner = owner_of(&live, &key).expect("a non-empty set has an owner");
            prop_assert!(live.iter().any(|node| node == owner));
            let mut reversed = live.clone();
            reversed.reverse();
            prop_assert_eq!(owner_of(&reversed, &key), Some(owner));
        }

        #[test]
        fn prop_removing_a_node_moves_only_its_partitions(
            ids in proptest::collection::btree_set("[a-z]{1,6}", 2..8),
            removed_index in 0usize..8,
            keys in proptest::collection::vec(("[a-z]{1,4}", -100i64..100), 1..50),
        ) {
            let live: Vec<String> = ids.into_iter().collect();
            let removed = live[removed_index % live.len()].clone();
            let remaining: Vec<String> =
                live.iter().filter(|node| **node != removed).cloned().collect();
            for (measurement, day) in keys {
                let key = partition(&measurement, day);
                let before = owner_of(&live, &key).unwrap();
                let after = owner_of(&remaining, &key).unwrap();
                if before != removed {
                    prop_assert_eq!(before, after);
                }
                prop_assert_ne!(after, removed.as_str());
            }
        }
    }
}
