//! `Membership` instances gossiping on loopback with a short heartbeat.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arc_gossip::{
    ClusterView, GossipAuthSettings, Membership, MembershipError, MembershipSettings, NodeInfo,
    NodeState, Phase, Role, detection_bound, leave_linger,
};
use tokio::time::{Instant, timeout_at};

const HEARTBEAT: Duration = Duration::from_millis(100);
/// Generous: convergence of a handful of nodes takes a few rounds; this only bounds a failure.
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(15);

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn settings(cluster: &str, id: &str, generation: u64, seeds: &[SocketAddr]) -> MembershipSettings {
    MembershipSettings {
        node_id: id.to_string(),
        cluster_name: cluster.to_string(),
        shared_secret: b"membership test secret".to_vec(),
        listen_addr: loopback(),
        advertise_addr: loopback(),
        seeds: seeds.iter().map(ToString::to_string).collect(),
        heartbeat_interval: HEARTBEAT,
        generation,
        dead_node_grace_period: MembershipSettings::DEFAULT_DEAD_NODE_GRACE_PERIOD,
        auth: GossipAuthSettings::default(),
    }
}

fn info(role: Role) -> NodeInfo {
    NodeInfo {
        role,
        phase: Phase::Ready,
        api_addr: "127.0.0.1:8000".into(),
        version: "test".into(),
        started_at_ms: 1,
        ..NodeInfo::placeholder()
    }
}

async fn start(
    cluster: &str,
    id: &str,
    generation: u64,
    role: Role,
    seeds: &[SocketAddr],
) -> Membership {
    Membership::start(settings(cluster, id, generation, seeds), info(role))
        .await
        .unwrap()
}

/// Waits until `member`'s view satisfies `predicate`, or panics at `deadline` showing the view.
async fn wait_for_view(
    member: &Membership,
    deadline: Instant,
    what: &str,
    predicate: impl Fn(&ClusterView) -> bool,
) {
    let mut views = member.subscribe();
    let waited = timeout_at(deadline, views.wait_for(|view| predicate(view))).await;
    if !matches!(waited, Ok(Ok(_))) {
        panic!(
            "{what}: not reached on {} by the deadline; last view: {:#?}",
            member.view().local_id,
            member.view()
        );
    }
}

fn state_of(view: &ClusterView, id: &str) -> Option<NodeState> {
    view.get(id).map(|node| node.state)
}

fn converged(view: &ClusterView, expected: &[(&str, Role)]) -> bool {
    view.nodes.len() == expected.len()
        && expected.iter().all(|(id, role)| {
            view.get(id)
                .is_some_and(|node| node.state == NodeState::Healthy && node.info.role == *role)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_converge_detect_death_leave_and_restart() {
    let cluster = "lifecycle";
    let a = start(cluster, "a", 1, Role::Writer, &[]).await;
    let b = start(cluster, "b", 1, Role::Reader, &[a.gossip_addr()]).await;
    let c = start(cluster, "c", 1, Role::Compactor, &[a.gossip_addr()]).await;

    let roles = [
        ("a", Role::Writer),
        ("b", Role::Reader),
        ("c", Role::Compactor),
    ];
    let deadline = Instant::now() + CONVERGENCE_DEADLINE;
    for member in [&a, &b, &c] {
        wait_for_view(member, deadline, "3 healthy nodes", |view| {
            converged(view, &roles)
        })
        .await;
        let view = member.view();
        let local = view.local().unwrap();
        assert!(local.is_self);
        assert_eq!(view.summary().node_count, 3);
        assert_eq!(view.summary().healthy_nodes, 3);
        assert!(view.nodes.iter().all(|node| node.last_heartbeat.is_some()));
    }

    // A crash: peers show it dead within the documented bound.
    let stopped_at = Instant::now();
    c.shutdown().await;
    let bound = detection_bound(HEARTBEAT);
    for member in [&a, &b] {
        wait_for_view(member, stopped_at + bound, "c dead", |view| {
            state_of(view, "c") == Some(NodeState::Dead)
        })
        .await;
    }
    eprintln!(
        "c shown dead on a and b after {:?} (bound {bound:?})",
        stopped_at.elapsed()
    );

    // A graceful leave: shown left, and it stays left once its heartbeats stop.
    let leave = b.leave(leave_linger(HEARTBEAT));
    let seen_left = wait_for_view(
        &a,
        Instant::now() + CONVERGENCE_DEADLINE,
        "b left",
        |view| state_of(view, "b") == Some(NodeState::Left),
    );
    tokio::join!(leave, seen_left);
    assert_eq!(state_of(&a.view(), "b"), Some(NodeState::Left));

    // A restart with the next generation: one node, alive, with the new generation.
    let c = start(cluster, "c", 2, Role::Compactor, &[a.gossip_addr()]).await;
    let deadline = Instant::now() + CONVERGENCE_DEADLINE;
    wait_for_view(&a, deadline, "c back as generation 2", |view| {
        view.get("c")
            .is_some_and(|node| node.generation == 2 && node.state == NodeState::Healthy)
    })
    .await;
    let view = a.view();
    assert_eq!(view.nodes.iter().filter(|node| node.id == "c").count(), 1);
    assert_eq!(view.summary().node_count, 3);
    // The newcomer learns the others' history too.
    wait_for_view(&c, deadline, "a healthy, b left", |view| {
        state_of(view, "a") == Some(NodeState::Healthy)
            && state_of(view, "b") == Some(NodeState::Left)
    })
    .await;

    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_publish_local_updates() {
    let cluster = "updates";
    let a = start(cluster, "a", 1, Role::Writer, &[]).await;
    let b = start(cluster, "b", 1, Role::Writer, &[a.gossip_addr()]).await;
    let deadline = Instant::now() + CONVERGENCE_DEADLINE;
    let roles = [("a", Role::Writer), ("b", Role::Writer)];
    wait_for_view(&b, deadline, "2 writers", |view| converged(view, &roles)).await;

    a.update(|info| {
        info.primary = true;
        info.epoch = 1;
        info.durable_lsn = 42;
    });
    // The local view reflects the change at once.
    let local_view = a.view();
    assert_eq!(local_view.local().unwrap().info.durable_lsn, 42);
    assert_eq!(a.local().durable_lsn, 42);
    assert_eq!(local_view.primary().unwrap().id, "a");

    wait_for_view(&b, deadline, "a primary at lsn 42", |view| {
        view.primary()
            .is_some_and(|primary| primary.id == "a" && primary.info.durable_lsn == 42)
    })
    .await;
    let ranking = arc_gossip::rank_standbys(&b.view(), &["a".to_string(), "b".to_string()]);
    assert_eq!(
        ranking.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );

    // An unhealthy self-check shows on the peer.
    a.update(|info| info.health.status = arc_gossip::HealthStatus::Unhealthy);
    wait_for_view(&b, deadline, "a unhealthy", |view| {
        state_of(view, "a") == Some(NodeState::Unhealthy)
    })
    .await;

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_keep_other_secrets_and_clusters_out() {
    let a = start("one", "a", 1, Role::Writer, &[]).await;
    let b = start("one", "b", 1, Role::Reader, &[a.gossip_addr()]).await;
    let mut wrong_secret = settings("one", "intruder", 1, &[a.gossip_addr()]);
    wrong_secret.shared_secret = b"some other secret".to_vec();
    let intruder = Membership::start(wrong_secret, info(Role::Writer))
        .await
        .unwrap();
    let other_cluster = start("two", "neighbour", 1, Role::Writer, &[a.gossip_addr()]).await;

    // By the time a and b see each other, the intruders have had many rounds to get in.
    let deadline = Instant::now() + CONVERGENCE_DEADLINE;
    let roles = [("a", Role::Writer), ("b", Role::Reader)];
    for member in [&a, &b] {
        wait_for_view(member, deadline, "a and b only", |view| {
            converged(view, &roles)
        })
        .await;
    }
    let rounds_later = Instant::now() + HEARTBEAT * 10;
    let mut views = a.subscribe();
    while Instant::now() < rounds_later {
        assert!(converged(&views.borrow_and_update(), &roles));
        let _ = timeout_at(rounds_later, views.changed()).await;
    }
    for outsider in [&intruder, &other_cluster] {
        assert_eq!(outsider.view().nodes.len(), 1);
    }
    for member in [a, b, intruder, other_cluster] {
        member.shutdown().await;
    }
}

#[tokio::test]
async fn test_should_refuse_invalid_settings() {
    let mut empty_secret = settings("c", "a", 1, &[]);
    empty_secret.shared_secret.clear();
    assert!(matches!(
        Membership::start(empty_secret, info(Role::Writer)).await,
        Err(MembershipError::Transport(_))
    ));
    let mut bad_seed = settings("c", "a", 1, &[]);
    bad_seed.seeds = vec!["no-port".into()];
    let error = Membership::start(bad_seed, info(Role::Writer))
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        "invalid gossip seed 'no-port': expected host:port"
    );
    let mut wildcard = settings("c", "a", 1, &[]);
    wildcard.advertise_addr = "0.0.0.0:0".parse().unwrap();
    assert!(matches!(
        Membership::start(wildcard, info(Role::Writer)).await,
        Err(MembershipError::UnspecifiedAdvertiseAddr { .. })
    ));
    let mut zero = settings("c", "a", 1, &[]);
    zero.heartbeat_interval = Duration::ZERO;
    assert!(matches!(
        Membership::start(zero, info(Role::Writer)).await,
        Err(MembershipError::ZeroHeartbeat)
    ));
}

#[tokio::test]
async fn test_should_find_seeds_by_host_name() {
    let a = start("names", "a", 1, Role::Writer, &[]).await;
    let seed = format!("localhost:{}", a.gossip_addr().port());
    let mut with_name = settings("names", "b", 1, &[]);
    with_name.seeds = vec![seed];
    let b = Membership::start(with_name, info(Role::Reader))
        .await
        .unwrap();
    let roles = [("a", Role::Writer), ("b", Role::Reader)];
    wait_for_view(
        &a,
        Instant::now() + CONVERGENCE_DEADLINE,
        "a and b",
        |view| converged(view, &roles),
    )
    .await;
    b.shutdown().await;
    a.shutdown().await;
}

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    metrics_util::debugging::DebugValue,
)>;

fn gauge(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snapshot
        .iter()
        .find(|(key, ..)| {
            key.key().name() == name
                && labels.iter().all(|(label, value)| {
                    key.key()
                        .labels()
                        .any(|l| l.key() == *label && l.value() == *value)
                })
        })
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Gauge(gauge) => gauge.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        })
}

// Current-thread runtime: every task runs on this thread, so the thread-local recorder sees
// what the membership tasks record.
#[tokio::test]
async fn test_should_record_cluster_metrics() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    arc_gossip::describe_metrics();

    let a = start("metrics", "a", 7, Role::Writer, &[]).await;
    let b = start("metrics", "b", 7, Role::Reader, &[a.gossip_addr()]).await;
    let roles = [("a", Role::Writer), ("b", Role::Reader)];
    let deadline = Instant::now() + CONVERGENCE_DEADLINE;
    for member in [&a, &b] {
        wait_for_view(member, deadline, "converged", |view| {
            converged(view, &roles)
        })
        .await;
    }
    // Each poll sends its view and records its metrics with no await in between, and this
    // runtime has one thread: both members' latest metrics come from converged views.
    let snapshot = snapshotter.snapshot().into_vec();
    let nodes = "arc_cluster_nodes";
    let series = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == nodes)
        .count();
    assert_eq!(series, 4 * 5, "every role x state combination");
    assert_eq!(
        gauge(
            &snapshot,
            nodes,
            &[("role", "writer"), ("state", "healthy")]
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &snapshot,
            nodes,
            &[("role", "reader"), ("state", "healthy")]
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(&snapshot, nodes, &[("role", "reader"), ("state", "dead")]),
        Some(0.0)
    );
    assert_eq!(gauge(&snapshot, "arc_cluster_generation", &[]), Some(7.0));
    for peer in ["a", "b"] {
        let age = gauge(
            &snapshot,
            "arc_cluster_peer_heartbeat_age_seconds",
            &[("peer", peer)],
        )
        .unwrap_or_else(|| panic!("no heartbeat age for {peer}"));
        assert!((0.0..5.0).contains(&age), "{peer}: {age}");
    }
    // Described, with units in the names where Prometheus expects them.
    for (key, unit, description, _) in &snapshot {
        let name = key.key().name();
        assert!(name.starts_with("arc_"), "{name}");
        assert!(description.is_some(), "{name} is not described");
        if *unit == Some(metrics::Unit::Seconds) {
            assert!(name.ends_with("_seconds"), "{name}");
        }
    }
    assert!(
        snapshot
            .iter()
            .any(|(key, ..)| key.key().name() == "arc_gossip_sent_packets_total")
    );

    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn test_should_be_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Membership>();
    assert_send_sync::<ClusterView>();
}
