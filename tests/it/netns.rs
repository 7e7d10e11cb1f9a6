//! Network namespaces for partition tests (root and iproute2 needed): two sides joined by one
//! link ([`Split`]), or one namespace per node on a bridge ([`Mesh`]).
//!
//! The split:
//!
//! ```text
//!   root ns ──(10.97.N.0/30)── ns A ══(10.98.N.0/30, the link)══ ns B ──(10.96.N.0/30)── root ns
//! ```
//!
//! Nodes in A and B gossip and forward over the A–B link; the test reaches each namespace's
//! APIs over its own link to the root namespace. Nothing routes between the root links, so
//! taking the A–B link down is a clean partition, and bringing it up heals it.

use std::net::IpAddr;
use std::process::Command;

/// Whether this process can build the topology: root, `ip` installed, and the kernel and
/// container letting us create a namespace and a veth pair (a container without
/// CAP_NET_ADMIN has a root uid but cannot). Checked once per process by doing it, then
/// undoing it: tests asking at the same moment would otherwise race on the probe's name (one
/// deleting the other's namespace) and both skip.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(probe)
}

fn probe() -> bool {
    let probe = format!("arcprobe{}", std::process::id() % 100_000);
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .is_ok_and(|output| output.status.success())
    };
    let usable = run(&["netns", "add", &probe])
        && run(&[
            "-n",
            &probe,
            "link",
            "add",
            "arcprobe0",
            "type",
            "veth",
            "peer",
            "name",
            "arcprobe1",
        ]);
    let _ = run(&["netns", "del", &probe]);
    usable
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether [`available`]; if not, reports `test` as skipped (with why) for CI's output.
pub fn available_or_skip(test: &str) -> bool {
    let usable = available();
    if !usable {
        crate::harness::skip(
            test,
            "needs root, iproute2 (ip netns) and permission to create network namespaces and veth pairs",
        );
    }
    usable
}

/// A cluster member prepared to run in a network namespace (the caller puts it there): gossip
/// on its gossip port and replication on any free port of `address` (also what it advertises),
/// the HTTP API on every interface, `seeds` as given, the shared `storage`, and `extra`
/// settings last.
fn member_in(
    address: IpAddr,
    cluster: &str,
    member: &crate::cluster::Member,
    seeds: &str,
    storage: &std::path::Path,
    extra: impl IntoIterator<Item = (String, String)>,
) -> crate::harness::TestNode {
    let mut env = crate::cluster::member_env(cluster, member, &[], storage);
    env.extend([
        ("ARC_SERVER_HOST".to_string(), "0.0.0.0".to_string()),
        (
            "ARC_CLUSTER_ADVERTISE_HOST".to_string(),
            address.to_string(),
        ),
        (
            "ARC_CLUSTER_COORDINATOR_ADDR".to_string(),
            format!("{address}:{}", member.gossip_port),
        ),
        (
            "ARC_CLUSTER_REPLICATION_ADDR".to_string(),
            format!("{address}:0"),
        ),
        ("ARC_CLUSTER_SEEDS".to_string(), seeds.to_string()),
    ]);
    env.extend(extra);
    crate::harness::TestNode::prepare_owned(env)
}

/// The two namespaces and their links; removed on drop.
pub struct Split {
    /// Namespace A's name.
    pub a: String,
    /// Namespace B's name.
    pub b: String,
    /// A's address on the A–B link (what nodes in A bind and advertise).
    pub a_link_ip: IpAddr,
    /// B's address on the A–B link.
    pub b_link_ip: IpAddr,
    /// Where the test reaches A's APIs.
    pub a_reach_ip: IpAddr,
    /// Where the test reaches B's APIs.
    pub b_reach_ip: IpAddr,
    link: String,
    root_links: [String; 2],
}

impl Split {
    /// Creates the namespaces and links, unique to this process.
    pub fn create() -> Split {
        // Two splits per test process at most (the tests that partition run side by side).
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2;
        let id = 20 + (std::process::id() % 110) * 2 + nth;
        let (a, b) = (format!("arc{id}a"), format!("arc{id}b"));
        let link = format!("arc{id}ab");
        let root_links = [format!("arc{id}ra"), format!("arc{id}rb")];
        // Leftovers of an earlier run with the same pid are removed first.
        for netns in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
        for name in [&link, &root_links[0], &root_links[1]] {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        for netns in [&a, &b] {
            ip(&["-n", netns, "link", "set", "lo", "up"]);
        }
        // The A–B link.
        let peer = format!("{link}p");
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &link, "netns", &a]);
        ip(&["link", "set", &peer, "netns", &b]);
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("10.98.{id}.1/30"),
            "dev",
            &link,
        ]);
        ip(&[
            "-n",
            &b,
            "addr",
            "add",
            &format!("10.98.{id}.2/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &a, "link", "set", &link, "up"]);
        ip(&["-n", &b, "link", "set", &peer, "up"]);
        // The test's links into each namespace.
        for (root_link, netns, subnet) in [(&root_links[0], &a, 97), (&root_links[1], &b, 96)] {
            let inner = format!("{root_link}p");
            ip(&[
                "link", "add", root_link, "type", "veth", "peer", "name", &inner,
            ]);
            ip(&["link", "set", &inner, "netns", netns]);
            ip(&[
                "addr",
                "add",
                &format!("10.{subnet}.{id}.1/30"),
                "dev",
                root_link,
            ]);
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("10.{subnet}.{id}.2/30"),
                "dev",
                &inner,
            ]);
            ip(&["link", "set", root_link, "up"]);
            ip(&["-n", netns, "link", "set", &inner, "up"]);
        }
        let parse = |text: String| text.parse::<IpAddr>().unwrap();
        Split {
            a_link_ip: parse(format!("10.98.{id}.1")),
            b_link_ip: parse(format!("10.98.{id}.2")),
            a_reach_ip: parse(format!("10.97.{id}.2")),
            b_reach_ip: parse(format!("10.96.{id}.2")),
            a,
            b,
            link,
            root_links,
        }
    }

    /// A cluster member prepared to run on side A (`in_a`) or B: gossip on `port` of its side's
    /// link address, the HTTP API on every interface, replication on any free port of the
    /// link, `seeds` as given, the shared `storage`, and `extra` settings last.
    pub fn member(
        &self,
        cluster: &str,
        member: &crate::cluster::Member,
        in_a: bool,
        seeds: &str,
        storage: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> crate::harness::TestNode {
        let (netns, link_ip, reach_ip) = if in_a {
            (&self.a, self.a_link_ip, self.a_reach_ip)
        } else {
            (&self.b, self.b_link_ip, self.b_reach_ip)
        };
        let extra = extra
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()));
        member_in(link_ip, cluster, member, seeds, storage, extra).in_netns(netns, reach_ip)
    }

    /// Cuts the A–B link: nothing passes between the namespaces.
    pub fn partition(&self) {
        ip(&["-n", &self.a, "link", "set", &self.link, "down"]);
    }

    /// Restores the A–B link.
    pub fn heal(&self) {
        ip(&["-n", &self.a, "link", "set", &self.link, "up"]);
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for netns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
        for name in &self.root_links {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

/// One network namespace per node, all on one bridge in the root namespace, for cutting any
/// node off from any other (root and iproute2 needed):
///
/// ```text
///   ns 0 ─┐
///   ns 1 ─┼── bridge (root ns, 10.95.N.254: the test; 10.95.N.253: a store the test serves)
///   ...  ─┘   node i at 10.95.N.(i + 1)
/// ```
///
/// A cut routes a node's packets for a peer to a dead-end device in its namespace, which
/// drops them silently, as a failed switch or firewall does (no error reaches the sender: a
/// connection hangs until its timeout). The root namespace does not forward, so nothing goes
/// around a cut, and the test reaches every node throughout.
pub struct Mesh {
    namespaces: Vec<String>,
    /// Each node's address (what it binds, advertises, and where the test reaches it).
    pub ips: Vec<IpAddr>,
    /// An address of the root namespace on the bridge for a server the test runs (an S3
    /// server), which [`Mesh::cut_store`] can cut a node off from while the test still reaches
    /// the node.
    pub store_ip: IpAddr,
    bridge: String,
    host_links: Vec<String>,
}

impl Mesh {
    /// Creates `count` namespaces on a bridge, unique to this process.
    pub fn create(count: usize) -> Mesh {
        assert!(count < 200, "a mesh of {count} nodes");
        // Two meshes per test process at most (the tests that use one run side by side).
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2;
        let id = (std::process::id() % 125) * 2 + nth;
        let bridge = format!("arcm{id}br");
        let namespaces: Vec<String> = (0..count).map(|i| format!("arcm{id}n{i}")).collect();
        let host_links: Vec<String> = (0..count).map(|i| format!("arcm{id}v{i}")).collect();
        // Leftovers of an earlier run with the same pid are removed first.
        for netns in &namespaces {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
        for name in host_links.iter().chain([&bridge]) {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.95.{id}.254/24"), "dev", &bridge]);
        ip(&["addr", "add", &format!("10.95.{id}.253/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut ips = Vec::new();
        for (i, (netns, host_link)) in namespaces.iter().zip(&host_links).enumerate() {
            let address = format!("10.95.{id}.{}", i + 1);
            ip(&["netns", "add", netns]);
            ip(&["-n", netns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", host_link, "type", "veth", "peer", "name", "eth0", "netns", netns,
            ]);
            ip(&["link", "set", host_link, "master", &bridge]);
            ip(&["link", "set", host_link, "up"]);
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", netns, "link", "set", "eth0", "up"]);
            // Where a cut sends packets: a veth whose peer is down drops whatever it is
            // given, and without ARP nothing reports the loss to the sender.
            ip(&[
                "-n", netns, "link", "add", "sink", "type", "veth", "peer", "name", "sinkp",
            ]);
            ip(&["-n", netns, "link", "set", "sink", "arp", "off"]);
            ip(&["-n", netns, "link", "set", "sink", "up"]);
            ips.push(address.parse().unwrap());
        }
        Mesh {
            namespaces,
            ips,
            store_ip: format!("10.95.{id}.253").parse().unwrap(),
            bridge,
            host_links,
        }
    }

    /// A cluster member prepared to run as node `index` of the mesh: gossip on its gossip port
    /// and replication on any free port of its address, the HTTP API on every interface,
    /// `seeds` as given, the shared `storage`, and `extra` settings last.
    pub fn member(
        &self,
        index: usize,
        cluster: &str,
        member: &crate::cluster::Member,
        seeds: &str,
        storage: &std::path::Path,
        extra: &[(String, String)],
    ) -> crate::harness::TestNode {
        let (netns, address) = (&self.namespaces[index], self.ips[index]);
        let extra = extra.iter().cloned();
        member_in(address, cluster, member, seeds, storage, extra).in_netns(netns, address)
    }

    /// Drops every packet node `from` sends to node `to` (one way: `to`'s packets still
    /// arrive).
    pub fn cut(&self, from: usize, to: usize) {
        self.drop_packets(from, self.ips[to]);
    }

    /// Routes node `node`'s packets for `target` into its dead end.
    fn drop_packets(&self, node: usize, target: IpAddr) {
        let target = format!("{target}/32");
        ip(&[
            "-n",
            &self.namespaces[node],
            "route",
            "replace",
            &target,
            "dev",
            "sink",
        ]);
    }

    /// Cuts the link between nodes `a` and `b`, both ways.
    pub fn sever(&self, a: usize, b: usize) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts node `node` off from every other node, both ways.
    pub fn isolate(&self, node: usize) {
        for other in (0..self.ips.len()).filter(|other| *other != node) {
            self.sever(node, other);
        }
    }

    /// Drops every packet node `node` sends to [`Mesh::store_ip`].
    pub fn cut_store(&self, node: usize) {
        self.drop_packets(node, self.store_ip);
    }

    /// Restores every cut between any two nodes, and between any node and the store: every
    /// route into a namespace's dead end is a cut.
    pub fn heal(&self) {
        for netns in &self.namespaces {
            ip(&["-n", netns, "route", "flush", "dev", "sink"]);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for netns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
        for name in self.host_links.iter().chain([&self.bridge]) {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}
