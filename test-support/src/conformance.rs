//! The packet-flow conformance matrix: what kube-proxy users expect each kind of client to get
//! from each kind of destination, written down independently of the lowering. Two suites run
//! every case for TCP and UDP: the tracer over the compiled model of each node
//! (nfcompile/tests/conformance.rs) and real packets in a two-node network-namespace topology
//! (nfcompile-cli/tests/conformance.rs). The cluster is `tests/conformance/two-nodes.yaml`.

use std::path::PathBuf;

/// The cluster both suites compile, once per node (`--node n1`, `--node n2`).
pub fn cluster_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates live in the workspace root")
        .join("nfcompile/tests/conformance/two-nodes.yaml")
}

pub struct Node {
    pub name: &'static str,
    /// InternalIP on the LAN.
    pub addr: &'static str,
    /// The node's end of every pod link (each pod's default gateway).
    pub gateway: &'static str,
    pub pod_cidr: &'static str,
}

pub const NODES: [Node; 2] = [
    Node {
        name: "n1",
        addr: "192.168.50.1",
        gateway: "10.244.1.1",
        pod_cidr: "10.244.1.0/24",
    },
    Node {
        name: "n2",
        addr: "192.168.50.2",
        gateway: "10.244.2.1",
        pod_cidr: "10.244.2.0/24",
    },
];

/// The external client, on the LAN; it routes service, load-balancer and external IPs via n1.
pub const EXTERNAL: &str = "192.168.50.100";
pub const LAN_PREFIX: u8 = 24;
/// Prefixes the external client sends to n1 (MetalLB-style announcement of the VIPs to n1).
pub const VIA_N1: [&str; 3] = ["10.96.0.0/16", "192.168.60.0/24", "192.168.70.0/24"];

/// Every endpoint serves TCP and UDP on this port.
pub const TARGET_PORT: u16 = 8080;

pub struct Pod {
    pub name: &'static str,
    /// Index into `NODES`.
    pub node: usize,
    pub addr: &'static str,
    /// Runs the echo server (clients only send).
    pub serves: bool,
}

pub const PODS: [Pod; 6] = [
    Pod {
        name: "a1",
        node: 0,
        addr: "10.244.1.10",
        serves: true,
    },
    Pod {
        name: "a2",
        node: 0,
        addr: "10.244.1.11",
        serves: true,
    },
    Pod {
        name: "c1",
        node: 0,
        addr: "10.244.1.50",
        serves: false,
    },
    Pod {
        name: "b1",
        node: 1,
        addr: "10.244.2.10",
        serves: true,
    },
    Pod {
        name: "b2",
        node: 1,
        addr: "10.244.2.11",
        serves: true,
    },
    Pod {
        name: "c2",
        node: 1,
        addr: "10.244.2.50",
        serves: false,
    },
];

pub fn pod(name: &str) -> &'static Pod {
    PODS.iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pod {name}"))
}

pub fn pod_at(addr: &str) -> Option<&'static Pod> {
    PODS.iter().find(|p| p.addr == addr)
}

/// Addresses a masqueraded packet can carry: any address of a node.
pub fn is_node_address(addr: &str) -> bool {
    NODES.iter().any(|n| n.addr == addr || n.gateway == addr)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// A pod, by name (on its own node).
    Pod(&'static str),
    /// A node itself, by index into `NODES`.
    Node(usize),
    /// The external client on the LAN.
    External,
}

impl From {
    pub fn address(self) -> &'static str {
        match self {
            From::Pod(p) => pod(p).addr,
            From::Node(n) => NODES[n].addr,
            From::External => EXTERNAL,
        }
    }
}

/// The source address an endpoint sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Src {
    /// The client's own address (no source NAT).
    Kept,
    /// A node's address (masquerade).
    Masq,
}
use Src::{Kept, Masq};

#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// New connections reach exactly these endpoints (each of them), seeing these sources.
    Reach(&'static [(&'static str, Src)]),
    /// Session affinity: the first connection reaches one of these, every later one the same.
    Sticky(&'static [&'static str], Src),
    /// Refused at once (ICMP port unreachable).
    Reject,
    /// Silently dropped: the client times out.
    Drop,
}

pub struct Case {
    pub what: &'static str,
    pub from: From,
    pub dst: &'static str,
    pub port: u16,
    pub expect: Expect,
}

const fn case(
    what: &'static str,
    from: From,
    dst: &'static str,
    port: u16,
    expect: Expect,
) -> Case {
    Case {
        what,
        from,
        dst,
        port,
        expect,
    }
}

const C1: From = From::Pod("c1");
const C2: From = From::Pod("c2");
const N1: From = From::Node(0);
const EXT: From = From::External;
const N1_IP: &str = "192.168.50.1";
const N2_IP: &str = "192.168.50.2";

const WEB_KEPT: Expect = Expect::Reach(&[("a1", Kept), ("b1", Kept)]);
const WEB_MASQ: Expect = Expect::Reach(&[("a1", Masq), ("b1", Masq)]);
const LOCAL_ALL_KEPT: Expect = Expect::Reach(&[("a2", Kept), ("b2", Kept)]);

/// Every case runs for TCP and for UDP (every service has both, on port 80 and the same node
/// port). Cases where kube-proxy's semantics cannot be observed with routed pods are left out:
/// a pod calling another node's node port of an eTP=Local service whose endpoint shares the
/// caller's node gets a reply that bypasses the DNATing node (kube-proxy behaves the same).
#[rustfmt::skip]
pub const CASES: &[Case] = &[
    // web: eTP/iTP Cluster, endpoints a1 (n1) and b1 (n2), node port 30010, LB 192.168.60.10,
    // external IP 192.168.70.10.
    case("cluster IP from a pod on this node", C1, "10.96.0.10", 80, WEB_KEPT),
    case("cluster IP from a pod on the other node", C2, "10.96.0.10", 80, WEB_KEPT),
    case("cluster IP from the node itself", N1, "10.96.0.10", 80, WEB_MASQ),
    case("cluster IP from outside the cluster", EXT, "10.96.0.10", 80, WEB_MASQ),
    case("wrong port of a cluster IP, from a pod", C1, "10.96.0.10", 81, Expect::Reject),
    case("wrong port of a cluster IP, from outside", EXT, "10.96.0.10", 81, Expect::Reject),
    case("unallocated cluster IP, from a pod", C1, "10.96.0.99", 80, Expect::Drop),
    case("unallocated cluster IP, from the node", N1, "10.96.0.99", 80, Expect::Drop),
    case("node port of this node, from outside", EXT, N1_IP, 30010, WEB_MASQ),
    case("node port of the other node, from outside", EXT, N2_IP, 30010, WEB_MASQ),
    case("node port of this node, from a pod", C1, N1_IP, 30010, WEB_MASQ),
    case("node port of the other node, from a pod", C1, N2_IP, 30010, WEB_MASQ),
    case("node port, from a pod on the other node", C2, N1_IP, 30010, WEB_MASQ),
    case("own node port, from the node", N1, N1_IP, 30010, WEB_MASQ),
    case("other node's node port, from the node", N1, N2_IP, 30010, WEB_MASQ),
    case("load-balancer IP from outside", EXT, "192.168.60.10", 80, WEB_MASQ),
    case("load-balancer IP from a pod", C1, "192.168.60.10", 80, WEB_MASQ),
    case("external IP from outside", EXT, "192.168.70.10", 80, WEB_MASQ),
    case("external IP from a pod", C1, "192.168.70.10", 80, WEB_MASQ),
    // local: eTP=Local, endpoints a2 (n1) and b2 (n2) — the source-IP lab's Local policy.
    case("eTP=Local node port, outside to n1", EXT, N1_IP, 30020, Expect::Reach(&[("a2", Kept)])),
    case("eTP=Local node port, outside to n2", EXT, N2_IP, 30020, Expect::Reach(&[("b2", Kept)])),
    case("eTP=Local load-balancer IP from outside", EXT, "192.168.60.20", 80, Expect::Reach(&[("a2", Kept)])),
    case("eTP=Local load-balancer IP from a pod goes anywhere", C1, "192.168.60.20", 80, LOCAL_ALL_KEPT),
    case("eTP=Local own node port from the node", N1, N1_IP, 30020, Expect::Reach(&[("a2", Masq), ("b2", Masq)])),
    case("eTP=Local cluster IP from a pod", C1, "10.96.0.20", 80, LOCAL_ALL_KEPT),
    // remote-only: eTP=Local, its one endpoint b1 on n2 — n1 has none.
    case("eTP=Local node port on a node without endpoints drops", EXT, N1_IP, 30030, Expect::Drop),
    case("eTP=Local load-balancer IP on a node without endpoints drops", EXT, "192.168.60.30", 80, Expect::Drop),
    case("eTP=Local node port on the node with the endpoint", EXT, N2_IP, 30030, Expect::Reach(&[("b1", Kept)])),
    case("eTP=Local load-balancer IP from a pod, no local endpoint", C1, "192.168.60.30", 80, Expect::Reach(&[("b1", Kept)])),
    case("eTP=Local load-balancer IP from the node, no local endpoint", N1, "192.168.60.30", 80, Expect::Reach(&[("b1", Masq)])),
    // itp-local: iTP=Local, endpoints a1 (n1) and b1 (n2).
    case("iTP=Local from a pod on n1", C1, "10.96.0.40", 80, Expect::Reach(&[("a1", Kept)])),
    case("iTP=Local from a pod on n2", C2, "10.96.0.40", 80, Expect::Reach(&[("b1", Kept)])),
    case("iTP=Local from the node", N1, "10.96.0.40", 80, Expect::Reach(&[("a1", Masq)])),
    // sticky: ClientIP affinity over four endpoints.
    case("session affinity from a pod", C1, "10.96.0.50", 80, Expect::Sticky(&["a1", "a2", "b1", "b2"], Kept)),
    case("session affinity from outside", EXT, "10.96.0.50", 80, Expect::Sticky(&["a1", "a2", "b1", "b2"], Masq)),
    // ranged: loadBalancerSourceRanges [192.168.50.100/32].
    case("source ranges: allowed client", EXT, "192.168.60.60", 80, WEB_MASQ),
    case("source ranges: other client dropped", C1, "192.168.60.60", 80, Expect::Drop),
    case("source ranges never apply to node ports", EXT, N1_IP, 30060, WEB_MASQ),
    case("source ranges never apply to the cluster IP", C1, "10.96.0.60", 80, WEB_KEPT),
    // empty: no endpoints at all.
    case("no endpoints: cluster IP", C1, "10.96.0.70", 80, Expect::Reject),
    case("no endpoints: node port", EXT, N1_IP, 30070, Expect::Reject),
    case("no endpoints: load-balancer IP", EXT, "192.168.60.70", 80, Expect::Reject),
    // draining: a1 terminating but serving, b1 terminating and not serving.
    case("terminating-only: serving endpoints are used", C1, "10.96.0.80", 80, Expect::Reach(&[("a1", Kept)])),
    case("terminating-only: node port", EXT, N1_IP, 30080, Expect::Reach(&[("a1", Masq)])),
    // Hairpin: an endpoint reaching its own service.
    case("hairpin through the cluster IP", From::Pod("a1"), "10.96.0.10", 80, Expect::Reach(&[("a1", Masq), ("b1", Kept)])),
    case("hairpin through an eTP=Local load-balancer IP", From::Pod("b2"), "192.168.60.20", 80, Expect::Reach(&[("a2", Kept), ("b2", Masq)])),
];

/// Where the external client's packet for `dst` lands first: n2 for n2's own address, n1 for
/// everything else (it routes the service prefixes via n1).
pub fn external_entry(dst: &str) -> usize {
    if dst == NODES[1].addr {
        1
    } else {
        0
    }
}

/// The node a packet from `from` is handled by first.
pub fn first_node(from: From, dst: &str) -> usize {
    match from {
        From::Pod(p) => pod(p).node,
        From::Node(n) => n,
        From::External => external_entry(dst),
    }
}

/// One answer as the real-packet suite and the tracer see it: which endpoint, which source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reached {
    pub pod: String,
    pub src: Src,
}

/// What a case produced, comparable with `Expect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The distinct (endpoint, source) pairs seen; `sticky` when every answer was the same.
    Reached(Vec<Reached>),
    Reject,
    Drop,
    /// Anything else, described.
    Other(String),
}

/// Whether `outcome` is what `expect` says. The tracer sees every branch of a first packet, so
/// for affinity it reaches all endpoints; real packets must stick to one (`sticky`).
pub fn conforms(expect: Expect, outcome: &Outcome, sticky_checked: bool) -> bool {
    match (expect, outcome) {
        (Expect::Reach(want), Outcome::Reached(got)) => {
            let mut want: Vec<Reached> = want
                .iter()
                .map(|(p, s)| Reached {
                    pod: p.to_string(),
                    src: *s,
                })
                .collect();
            want.sort();
            &want == got
        }
        (Expect::Sticky(pods, src), Outcome::Reached(got)) => {
            if sticky_checked {
                got.len() == 1 && pods.contains(&got[0].pod.as_str()) && got[0].src == src
            } else {
                got.len() == pods.len()
                    && got
                        .iter()
                        .all(|r| pods.contains(&r.pod.as_str()) && r.src == src)
            }
        }
        (Expect::Reject, Outcome::Reject) | (Expect::Drop, Outcome::Drop) => true,
        _ => false,
    }
}
