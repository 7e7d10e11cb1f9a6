//! Real chitchat instances gossiping over `AuthenticatedUdpTransport` on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arc_gossip::AuthenticatedUdpTransport;
use chitchat::transport::{Transport, UdpTransport};
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};

const CLUSTER: &str = "cluster-a";
const DEADLINE: Duration = Duration::from_secs(20);

fn free_udp_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.local_addr().unwrap()
}

async fn start(node_id: &str, seeds: &[SocketAddr], transport: &dyn Transport) -> ChitchatHandle {
    let listen_addr = free_udp_addr();
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(node_id, 1, listen_addr),
        cluster_id: CLUSTER.to_string(),
        gossip_interval: Duration::from_millis(25),
        listen_addr,
        seed_nodes: seeds.iter().map(ToString::to_string).collect(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: Duration::from_millis(25),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3_600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V1,
    };
    let initial_key_values = vec![("role".to_string(), format!("role-of-{node_id}"))];
    spawn_chitchat(config, initial_key_values, transport)
        .await
        .unwrap()
}

fn addr(handle: &ChitchatHandle) -> SocketAddr {
    handle.chitchat_id().gossip_advertise_addr
}

/// Returns the value of `key` for `node_id` as seen by `observer`.
async fn seen_value(observer: &ChitchatHandle, node_id: &str, key: &str) -> Option<String> {
    let chitchat = observer.chitchat();
    let chitchat = chitchat.lock().await;
    chitchat
        .node_states()
        .iter()
        .find(|(id, _)| &*id.node_id == node_id)
        .and_then(|(_, state)| state.get(key).map(str::to_string))
}

async fn known_node_ids(observer: &ChitchatHandle) -> Vec<String> {
    let chitchat = observer.chitchat();
    let chitchat = chitchat.lock().await;
    chitchat
        .node_states()
        .keys()
        .map(|id| id.node_id.to_string())
        .collect()
}

async fn wait_for_value(observer: &ChitchatHandle, node_id: &str, key: &str, expected: &str) {
    let poll = async {
        let mut interval = tokio::time::interval(Duration::from_millis(20));
        loop {
            interval.tick().await;
            if seen_value(observer, node_id, key).await.as_deref() == Some(expected) {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap_or_else(|_| panic!("{node_id}.{key} never became {expected}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_should_converge_with_secret_and_exclude_others() {
    let genuine = AuthenticatedUdpTransport::new(b"cluster secret", CLUSTER).unwrap();
    let wrong_secret = AuthenticatedUdpTransport::new(b"wrong secret", CLUSTER).unwrap();

    let alice = start("alice", &[], &genuine).await;
    let bob = start("bob", &[addr(&alice)], &genuine).await;
    let seeds = [addr(&alice), addr(&bob)];
    let mallory = start("mallory", &seeds, &wrong_secret).await;
    let plain = start("plain", &seeds, &UdpTransport).await;

    wait_for_value(&alice, "bob", "role", "role-of-bob").await;
    wait_for_value(&bob, "alice", "role", "role-of-alice").await;

    // Genuine updates keep flowing for many gossip rounds while the intruders keep trying.
    for round in 0..5 {
        let value = round.to_string();
        bob.with_chitchat(|chitchat| chitchat.self_node_state().set("tick", &value))
            .await;
        wait_for_value(&alice, "bob", "tick", &value).await;
    }

    for observer in [&alice, &bob] {
        let mut known = known_node_ids(observer).await;
        known.sort();
        assert_eq!(known, ["alice", "bob"]);
    }
    for intruder in [&mallory, &plain] {
        let known = known_node_ids(intruder).await;
        assert_eq!(known, [intruder.chitchat_id().node_id.to_string()]);
    }

    for handle in [alice, bob, mallory, plain] {
        handle.shutdown().await.unwrap();
    }
}
