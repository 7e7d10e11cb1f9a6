//! Deterministic standby ranking for failover (DESIGN.md section 6, step 2). Pure.
//!
//! Every standby computes the ranking from its own copy of the cluster view. The order is total
//! and uses only values that travel in gossip, so standbys with the same view agree on it.
//! Standbys with different views (gossip still converging) may disagree: that only changes who
//! tries first, because the catalog's put-if-absent decides who wins.

use std::cmp::Ordering;

use crate::view::{ClusterView, NodeState, Role};

/// What ranking looks at for one eligible standby.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Node id.
    pub id: String,
    /// Highest LSN it made durable: the more it has, the less is lost.
    pub durable_lsn: u64,
    /// Its health score, 0 to 100.
    pub health_score: u8,
}

/// Orders candidates best first: durable LSN descending, then health score descending, then
/// node id ascending. Total, because node ids are unique in a view.
pub fn compare(a: &Candidate, b: &Candidate) -> Ordering {
    b.durable_lsn
        .cmp(&a.durable_lsn)
        .then_with(|| b.health_score.cmp(&a.health_score))
        .then_with(|| a.id.cmp(&b.id))
}

/// Returns the standbys eligible to replace the primary, best first (see [`compare`]).
///
/// Eligible: a live, healthy standby writer (see [`rank_healthy_standbys`]) listed in
/// `in_sync` (the catalog's in-sync set: only its members hold every acknowledged write, so an
/// empty set has no candidate). The candidate at index `k` waits `k` steps before trying.
pub fn rank_standbys(view: &ClusterView, in_sync: &[String]) -> Vec<Candidate> {
    let mut candidates = rank_healthy_standbys(view);
    candidates.retain(|candidate| in_sync.contains(&candidate.id));
    candidates
}

/// Returns every standby writer of `view` (role writer, not claiming primary, state healthy:
/// alive, ready, not unhealthy), best first, whatever the in-sync set. A failover candidate
/// offers them all to its promote, which keeps those in the set as the log has it then.
pub fn rank_healthy_standbys(view: &ClusterView) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = view
        .nodes
        .iter()
        .filter(|node| node.info.role == Role::Writer)
        .filter(|node| !node.info.primary)
        .filter(|node| node.state == NodeState::Healthy)
        .map(|node| Candidate {
            id: node.id.clone(),
            durable_lsn: node.info.durable_lsn,
            health_score: node.info.health.score,
        })
        .collect();
    candidates.sort_by(compare);
    candidates
}

/// Returns the position of `id` in `ranking`, or `None` if it is not eligible.
pub fn rank_of(ranking: &[Candidate], id: &str) -> Option<usize> {
    ranking.iter().position(|candidate| candidate.id == id)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::view::tests::{info, node};
    use crate::view::{HealthStatus, NodeInfo, NodeView};

    fn candidate(id: &str, durable_lsn: u64, health_score: u8) -> Candidate {
        Candidate {
            id: id.into(),
            durable_lsn,
            health_score,
        }
    }

    fn writer(id: &str, state: NodeState, durable_lsn: u64, score: u8) -> NodeView {
        let mut node_info = info(Role::Writer);
        node_info.durable_lsn = durable_lsn;
        node_info.health.score = score;
        node(id, state, node_info)
    }

    fn cluster(nodes: Vec<NodeView>) -> ClusterView {
        ClusterView {
            cluster_name: "c".into(),
            local_id: "a".into(),
            nodes,
        }
    }

    #[test]
    fn test_should_prefer_lsn_then_score_then_id() {
        let mut ranked = [
            candidate("b", 10, 50),
            candidate("a", 10, 50),
            candidate("c", 10, 90),
            candidate("d", 11, 0),
        ];
        ranked.sort_by(compare);
        let ids: Vec<&str> = ranked.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["d", "c", "a", "b"]);
    }

    #[test]
    fn test_should_rank_only_eligible_standbys() {
        let mut primary = info(Role::Writer);
        primary.primary = true;
        primary.durable_lsn = 1_000;
        let mut degraded = info(Role::Writer);
        degraded.health.status = HealthStatus::Degraded;
        degraded.durable_lsn = 5;
        degraded.health.score = 70;
        let view = cluster(vec![
            node("p", NodeState::Healthy, primary),
            writer("w1", NodeState::Healthy, 10, 100),
            writer("w2", NodeState::Unhealthy, 99, 100),
            writer("w3", NodeState::Dead, 99, 100),
            writer("w4", NodeState::Joining, 99, 100),
            writer("w5", NodeState::Left, 99, 100),
            node("w6", NodeState::Healthy, degraded),
            writer("w7", NodeState::Healthy, 10, 100),
            node("r1", NodeState::Healthy, info(Role::Reader)),
            node("s1", NodeState::Healthy, NodeInfo::placeholder()),
        ]);
        let ids = |ranking: Vec<Candidate>| -> Vec<String> {
            ranking.into_iter().map(|c| c.id).collect()
        };
        let everyone: Vec<String> = view.nodes.iter().map(|node| node.id.clone()).collect();
        assert_eq!(ids(rank_standbys(&view, &everyone)), ["w1", "w7", "w6"]);
        // Without an in-sync set to filter by: the same healthy standby writers.
        assert_eq!(ids(rank_healthy_standbys(&view)), ["w1", "w7", "w6"]);
        let in_sync = ["w7".to_string(), "w6".to_string(), "w3".to_string()];
        assert_eq!(ids(rank_standbys(&view, &in_sync)), ["w7", "w6"]);
        assert!(
            rank_standbys(&view, &[]).is_empty(),
            "no in-sync set, no candidate"
        );
        let ranking = rank_standbys(&view, &everyone);
        assert_eq!(rank_of(&ranking, "w7"), Some(1));
        assert_eq!(rank_of(&ranking, "p"), None);
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        // Small domains so that ties on LSN and score are frequent.
        (
            prop::sample::select(vec!["a", "b", "c", "d", "e"]),
            0u64..3,
            0u8..3,
        )
            .prop_map(|(id, durable_lsn, health_score)| candidate(id, durable_lsn, health_score))
    }

    fn arb_state() -> impl Strategy<Value = NodeState> {
        prop::sample::select(NodeState::ALL)
    }

    fn arb_view() -> impl Strategy<Value = Vec<NodeView>> {
        prop::collection::btree_map(
            "[a-f]{1,2}",
            (arb_state(), 0u64..3, 0u8..3, any::<bool>(), any::<bool>()),
            0..10,
        )
        .prop_map(|nodes| {
            nodes
                .into_iter()
                .map(|(id, (state, lsn, score, is_writer, primary))| {
                    let mut node_info = info(if is_writer {
                        Role::Writer
                    } else {
                        Role::Reader
                    });
                    node_info.durable_lsn = lsn;
                    node_info.health.score = score;
                    node_info.primary = primary;
                    node(&id, state, node_info)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn test_should_be_a_total_order(
            a in arb_candidate(),
            b in arb_candidate(),
            c in arb_candidate(),
        ) {
            // Antisymmetric, and equal only for equal candidates (ids are unique in a view).
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            prop_assert_eq!(compare(&a, &b) == Ordering::Equal, a == b);
            prop_assert_eq!(compare(&a, &a), Ordering::Equal);
            // Transitive.
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn test_should_rank_independently_of_input_order(
            nodes in arb_view(),
            in_sync_mask in any::<u16>(),
            rotation in any::<usize>(),
        ) {
            let in_sync: Vec<String> = nodes
                .iter()
                .enumerate()
                .filter(|(index, _)| in_sync_mask & (1 << index) != 0)
                .map(|(_, node)| node.id.clone())
                .collect();
            let expected = rank_standbys(&cluster(nodes.clone()), &in_sync);

            let mut reordered = nodes;
            reordered.reverse();
            if !reordered.is_empty() {
                let len = reordered.len();
                reordered.rotate_left(rotation % len);
            }
            let mut in_sync_reordered = in_sync.clone();
            in_sync_reordered.reverse();
            prop_assert_eq!(
                rank_standbys(&cluster(reordered), &in_sync_reordered),
                expected.clone()
            );

            // The result is sorted, ties broken by id, and only eligible nodes appear.
            for pair in expected.windows(2) {
                prop_assert_eq!(compare(&pair[0], &pair[1]), Ordering::Less);
                if pair[0].durable_lsn == pair[1].durable_lsn
                    && pair[0].health_score == pair[1].health_score
                {
                    prop_assert!(pair[0].id < pair[1].id);
                }
            }
            for candidate in &expected {
                prop_assert!(in_sync.is_empty() || in_sync.contains(&candidate.id));
            }
        }
    }
}
