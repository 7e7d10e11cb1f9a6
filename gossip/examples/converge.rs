//! Measures gossip convergence and failure detection on loopback, in one process.
//!
//! ```text
//! cargo run --release -p arc-gossip --example converge -- --nodes 50 --heartbeat-ms 200
//! ```
//!
//! Starts N members (each seeded with the first three), measures the time until every member's
//! view shows N healthy nodes, watches the converged cluster for `--hold-ms` and counts views
//! in which a live node was not healthy (false suspicions), then shuts the last member down
//! and measures the time until every other member shows it dead.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arc_gossip::{
    ClusterView, GossipAuthSettings, Health, Membership, MembershipSettings, NodeInfo, NodeState,
    Phase, Role, detection_bound, failure_detector_config, poll_interval,
};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

struct Options {
    nodes: usize,
    heartbeat: Duration,
    hold: Duration,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        nodes: 5,
        heartbeat: Duration::from_millis(200),
        hold: Duration::from_secs(3),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("flag {flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|error| format!("invalid value '{value}' for {flag}: {error}"))?;
        match flag.as_str() {
            "--nodes" => options.nodes = number as usize,
            "--heartbeat-ms" => options.heartbeat = Duration::from_millis(number),
            "--hold-ms" => options.hold = Duration::from_millis(number),
            other => {
                return Err(format!(
                    "unknown flag {other}: expected --nodes, --heartbeat-ms, --hold-ms"
                ));
            }
        }
    }
    if options.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    Ok(options)
}

fn role_of(index: usize) -> Role {
    [Role::Writer, Role::Reader, Role::Compactor][index % 3]
}

fn settings(index: usize, heartbeat: Duration, seeds: &[SocketAddr]) -> MembershipSettings {
    let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    MembershipSettings {
        node_id: format!("node-{index:03}"),
        cluster_name: "converge-bench".into(),
        shared_secret: b"converge benchmark secret".to_vec(),
        listen_addr: loopback,
        advertise_addr: loopback,
        seeds: seeds.iter().map(ToString::to_string).collect(),
        heartbeat_interval: heartbeat,
        generation: 1,
        dead_node_grace_period: MembershipSettings::DEFAULT_DEAD_NODE_GRACE_PERIOD,
        auth: GossipAuthSettings::default(),
    }
}

fn info(index: usize) -> NodeInfo {
    NodeInfo {
        role: role_of(index),
        phase: Phase::Ready,
        health: Health::default(),
        api_addr: format!("127.0.0.1:{}", 8000 + index),
        replication_addr: format!("127.0.0.1:{}", 9100 + index),
        durable_lsn: 0,
        epoch: 0,
        primary: false,
        version: env!("CARGO_PKG_VERSION").into(),
        started_at_ms: 0,
    }
}

fn all_healthy(view: &ClusterView, count: usize) -> bool {
    view.nodes.len() == count
        && view
            .nodes
            .iter()
            .all(|node| node.state == NodeState::Healthy)
}

/// Waits until every receiver's view satisfies `predicate`; returns the time the last one did,
/// measured from `since`, or `None` at `deadline`.
async fn time_until_all(
    members: &[Membership],
    since: Instant,
    deadline: Instant,
    predicate: impl Fn(&ClusterView) -> bool + Clone + Send + Sync + 'static,
) -> Option<Duration> {
    let mut waits = JoinSet::new();
    for member in members {
        let mut views = member.subscribe();
        let predicate = predicate.clone();
        waits.spawn(async move {
            timeout_at(deadline, views.wait_for(|view| predicate(view)))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|_| Instant::now())
        });
    }
    let mut last = since;
    while let Some(joined) = waits.join_next().await {
        last = last.max(joined.expect("wait task panicked")?);
    }
    Some(last - since)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let options = parse_options()?;
    let heartbeat = options.heartbeat;
    let detector = failure_detector_config(heartbeat, Duration::from_secs(3_600));
    println!(
        "settings: nodes={} heartbeat={heartbeat:?} seeds=first 3 phi={} window={} initial_interval={:?} max_interval={:?} poll={:?} detection_bound={:?} transport=hmac-sha256 loopback, one process, {} worker threads",
        options.nodes,
        detector.phi_threshold,
        detector.sampling_window_size,
        detector.initial_interval,
        detector.max_interval,
        poll_interval(heartbeat),
        detection_bound(heartbeat),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );

    let started = Instant::now();
    let mut members: Vec<Membership> = Vec::with_capacity(options.nodes);
    let mut seeds: Vec<SocketAddr> = Vec::new();
    for index in 0..options.nodes {
        let member = Membership::start(settings(index, heartbeat, &seeds), info(index))
            .await
            .map_err(|error| format!("failed to start member {index}: {error}"))?;
        if seeds.len() < 3 {
            seeds.push(member.gossip_addr());
        }
        members.push(member);
    }
    let all_started = started.elapsed();

    let count = options.nodes;
    let converged = time_until_all(
        &members,
        started,
        started + Duration::from_secs(300),
        move |view| all_healthy(view, count),
    )
    .await
    .ok_or("the cluster did not converge within 300 s")?;
    println!(
        "converged: every member shows {count} healthy nodes {converged:?} after the first start ({all_started:?} to start all)"
    );

    // Steady state: count views where some live node was not shown healthy.
    let hold_until = Instant::now() + options.hold;
    let mut watchers = JoinSet::new();
    for member in &members {
        let mut views = member.subscribe();
        watchers.spawn(async move {
            let mut suspicious_views = 0usize;
            let mut views_seen = 0usize;
            loop {
                {
                    let view = views.borrow_and_update();
                    views_seen += 1;
                    if !all_healthy(&view, count) {
                        suspicious_views += 1;
                    }
                }
                if timeout_at(hold_until, views.changed()).await.is_err() {
                    return (suspicious_views, views_seen);
                }
            }
        });
    }
    let (mut suspicious, mut seen) = (0, 0);
    while let Some(joined) = watchers.join_next().await {
        let (member_suspicious, member_seen) = joined.expect("watch task panicked");
        suspicious += member_suspicious;
        seen += member_seen;
    }
    println!(
        "steady state over {:?}: {suspicious} of {seen} views showed a live node as not healthy",
        options.hold
    );

    let victim = members.pop().expect("at least two members");
    let victim_id = victim.view().local_id.clone();
    let stopped_at = Instant::now();
    victim.shutdown().await;
    let bound = detection_bound(heartbeat);
    let detected = {
        let victim_id = victim_id.clone();
        time_until_all(&members, stopped_at, stopped_at + bound * 3, move |view| {
            view.get(&victim_id)
                .is_some_and(|node| node.state == NodeState::Dead)
        })
        .await
    };
    match detected {
        Some(detected) => println!(
            "detected: every other member shows {victim_id} dead {detected:?} after its shutdown (bound {bound:?}, {})",
            if detected <= bound {
                "within"
            } else {
                "EXCEEDED"
            }
        ),
        None => println!("detected: NOT within 3 x bound ({:?})", bound * 3),
    }

    for member in members {
        member.shutdown().await;
    }
    Ok(())
}
