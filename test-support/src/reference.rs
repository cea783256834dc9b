//! A small reference model of kube-proxy's service semantics, written from its documented
//! behaviour and independently of the lowering: given the IR and the first packet of a
//! connection, which endpoints may answer and whether the source is masqueraded — or whether
//! the packet is dropped, rejected or left alone. The tracer (which evaluates the compiled
//! rules) must agree with it on random clusters (`tests/reference.rs`, fuzz target
//! `trace_reference`). Topology hints are modelled by zone only (the generator never sets
//! node hints).

use std::collections::BTreeSet;
use std::net::IpAddr;

use nfcompile::ir::{
    Cluster, DetectLocal, Endpoint, NodePortAddresses, Protocol, Service, ServicePort,
    TrafficPolicy,
};
use nfcompile::trace::Origin;

/// What should happen to the first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// DNAT to one of these `address:port` targets, each with whether it is masqueraded.
    Dnat(BTreeSet<(String, bool)>),
    Drop,
    Reject,
    /// No service rule applies.
    Accept,
}

pub struct Packet {
    pub origin: Origin,
    pub proto: Protocol,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub port: u16,
}

fn same_family(a: &IpAddr, b: &IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn target(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Whether kube-proxy's local-traffic detector calls the source a pod; `None` when the
/// detector cannot work (no CIDR of that family to compare with).
fn from_pod(c: &Cluster, p: &Packet) -> Option<bool> {
    let nets = match &c.config.detect_local {
        DetectLocal::ClusterCidr => &c.config.cluster_cidrs,
        DetectLocal::NodeCidr => &c.node.pod_cidrs,
        DetectLocal::InterfaceNamePrefix(_) | DetectLocal::BridgeInterface(_) => {
            return Some(p.origin == Origin::Pod)
        }
    };
    let family: Vec<_> = nets
        .iter()
        .filter(|n| same_family(&n.ip(), &p.src))
        .collect();
    (!family.is_empty()).then(|| family.iter().any(|n| n.contains(p.src)))
}

/// The node's own addresses (`fib … type local`).
fn is_local(c: &Cluster, a: &IpAddr) -> bool {
    a.is_loopback() || c.node.addresses.contains(a)
}

/// Addresses that accept node ports: `nodePortAddresses`, empty meaning the primary address
/// of each family.
fn node_port_address(c: &Cluster, a: &IpAddr) -> bool {
    if !c.node.addresses.contains(a) {
        return false;
    }
    let primary = |a: &IpAddr| c.node.addresses.iter().find(|x| same_family(x, a)) == Some(a);
    if c.config.node_port_addresses.is_empty() {
        return primary(a);
    }
    c.config.node_port_addresses.iter().any(|n| match n {
        NodePortAddresses::Primary => primary(a),
        NodePortAddresses::Cidr(net) => net.contains(*a),
    })
}

/// (address, target port) of every endpoint of this port and family, deduplicated.
fn candidates<'a>(
    svc: &'a Service,
    port: &ServicePort,
    family_of: &IpAddr,
) -> Vec<(&'a Endpoint, u16)> {
    let mut out: Vec<(&Endpoint, u16)> = Vec::new();
    for e in &svc.endpoints {
        if !same_family(&e.address, family_of) {
            continue;
        }
        let Some(p) = e
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        if out
            .iter()
            .any(|(o, op)| o.address == e.address && i32::from(*op) == p.port)
        {
            continue;
        }
        out.push((e, p.port as u16));
    }
    out
}

/// Ready endpoints, else serving-and-terminating ones (kube-proxy's fallback for draining
/// services), among those `keep` allows.
fn usable<'a>(
    c: &[(&'a Endpoint, u16)],
    keep: impl Fn(&Endpoint) -> bool,
) -> Vec<(&'a Endpoint, u16)> {
    let ready: Vec<_> = c
        .iter()
        .copied()
        .filter(|(e, _)| e.ready && keep(e))
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    c.iter()
        .copied()
        .filter(|(e, _)| e.serving && e.terminating && keep(e))
        .collect()
}

/// Cluster-wide endpoints, narrowed to this node's zone when every ready endpoint carries a
/// zone hint and some hint names the zone.
fn cluster_wide<'a>(cluster: &Cluster, c: &[(&'a Endpoint, u16)]) -> Vec<(&'a Endpoint, u16)> {
    let ready: Vec<&Endpoint> = c.iter().map(|(e, _)| *e).filter(|e| e.ready).collect();
    let zone = cluster.node.zone.as_deref();
    let zones = |e: &Endpoint| {
        e.hints
            .as_ref()
            .map(|h| h.for_zones.clone())
            .unwrap_or_default()
    };
    let use_zone = c.iter().any(|(e, _)| e.hints.is_some())
        && !ready.is_empty()
        && ready.iter().all(|e| !zones(e).is_empty())
        && zone.is_some_and(|z| ready.iter().any(|e| zones(e).iter().any(|x| x == z)));
    if use_zone {
        let z = zone.unwrap().to_string();
        usable(c, |e| zones(e).contains(&z))
    } else {
        usable(c, |_| true)
    }
}

/// `loadBalancerSourceRanges`: the source must be in a range. When a range holds the node's
/// primary address of the destination's family (kube-proxy's `allowFromNode`), the service's
/// own load-balancer IPs are allowed as sources too (a node's connection to a local VIP loops
/// back with the VIP as its source); no other address of the node is.
/// Ranges of the other family are ignored (kube-proxy's per-family service info): with none
/// of the packet's family, the load balancer is open.
fn allowed(c: &Cluster, svc: &Service, p: &Packet) -> bool {
    let ranges: Vec<_> = svc
        .load_balancer_source_ranges
        .iter()
        .filter(|r| same_family(&r.ip(), &p.dst))
        .collect();
    if ranges.is_empty() || ranges.iter().any(|r| r.contains(p.src)) {
        return true;
    }
    let primary = c
        .node
        .addresses
        .iter()
        .find(|a| same_family(a, &p.dst) && !a.is_loopback());
    primary.is_some_and(|a| ranges.iter().any(|r| r.contains(*a)))
        && svc.load_balancer_ips.contains(&p.src)
}

enum Frontend<'a> {
    ClusterIp(&'a Service, &'a ServicePort),
    External(&'a Service, &'a ServicePort),
}

/// The first packet's fate under kube-proxy's rules.
pub fn expect(c: &Cluster, p: &Packet) -> Expected {
    let port_match = |sp: &&ServicePort| sp.protocol == p.proto && sp.port == i32::from(p.port);
    let mut frontend = None;
    for svc in &c.services {
        if svc.cluster_ips.contains(&p.dst) {
            match svc.ports.iter().find(port_match) {
                Some(sp) => frontend = Some(Frontend::ClusterIp(svc, sp)),
                None => return Expected::Reject, // a port the cluster IP does not serve
            }
            break;
        }
        if svc.load_balancer_ips.contains(&p.dst) || svc.external_ips.contains(&p.dst) {
            if let Some(sp) = svc.ports.iter().find(port_match) {
                if svc.load_balancer_ips.contains(&p.dst) && !allowed(c, svc, p) {
                    return Expected::Drop;
                }
                frontend = Some(Frontend::External(svc, sp));
                break;
            }
        }
    }
    if frontend.is_none() && node_port_address(c, &p.dst) {
        // Each family's node ports belong to the services of that family.
        frontend = c
            .services
            .iter()
            .filter(|svc| svc.cluster_ips.iter().any(|ip| same_family(ip, &p.dst)))
            .find_map(|svc| {
                svc.ports
                    .iter()
                    .find(|sp| sp.protocol == p.proto && sp.node_port == Some(i32::from(p.port)))
                    .map(|sp| Frontend::External(svc, sp))
            });
    }
    let Some(frontend) = frontend else {
        return if c.config.service_cidrs.iter().any(|n| n.contains(p.dst)) {
            Expected::Drop // an unallocated service address
        } else {
            Expected::Accept
        };
    };
    let (svc, sp) = match frontend {
        Frontend::ClusterIp(s, sp) | Frontend::External(s, sp) => (s, sp),
    };
    let all = candidates(svc, sp, &p.dst);
    if usable(&all, |_| true).is_empty() {
        return Expected::Reject; // no endpoints at all
    }
    let local = usable(&all, |e| {
        e.node_name.as_deref() == Some(c.node.name.as_str())
    });
    let pod = from_pod(c, p);
    // (endpoints, masquerade whatever the endpoint)
    let (chosen, masq) = match frontend {
        Frontend::ClusterIp(..) => {
            let list = if svc.internal_traffic_policy == TrafficPolicy::Local {
                local
            } else {
                cluster_wide(c, &all)
            };
            (list, c.config.masquerade_all || pod == Some(false))
        }
        Frontend::External(..) => {
            if svc.external_traffic_policy == TrafficPolicy::Cluster {
                (cluster_wide(c, &all), true)
            } else if pod == Some(true) {
                (cluster_wide(c, &all), false) // pods short-circuit to every endpoint
            } else if is_local(c, &p.src) {
                (cluster_wide(c, &all), true) // the node itself: every endpoint, masqueraded
            } else {
                (local, false) // external clients keep their address, local endpoints only
            }
        }
    };
    if chosen.is_empty() {
        return Expected::Drop; // a Local policy without a local endpoint
    }
    Expected::Dnat(
        chosen
            .iter()
            .map(|(e, port)| (target(e.address, *port), masq || e.address == p.src))
            .collect(),
    )
}

/// The first packets worth checking on `c`: every frontend (and a wrong port, an unallocated
/// service address, an unrelated one) from an external client inside and outside any source
/// range, a pod, the node, and an endpoint of the service itself (hairpin).
pub fn packets(c: &Cluster) -> Vec<Packet> {
    let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut sources: Vec<(Origin, IpAddr)> = vec![
        (Origin::External, v4("203.0.113.7")),
        (Origin::External, v4("198.51.100.7")),
        (Origin::External, v4("2001:db8::7")),
        (Origin::External, v4("3fff::7")),
    ];
    let pod_nets = match c.config.detect_local {
        DetectLocal::NodeCidr => &c.node.pod_cidrs,
        _ => &c.config.cluster_cidrs,
    };
    for fallback in [v4("10.128.0.77"), v4("fd00:10::77")] {
        let pod = pod_nets
            .iter()
            .find(|n| same_family(&n.ip(), &fallback))
            .and_then(|n| n.iter().nth(77))
            .unwrap_or(fallback);
        sources.push((Origin::Pod, pod));
    }
    for a in &c.node.addresses {
        sources.push((Origin::Node, *a));
    }
    let mut out = Vec::new();
    let mut to = |dst: IpAddr, proto: Protocol, port: u16, extra: &[(Origin, IpAddr)]| {
        for (origin, src) in sources.iter().chain(extra) {
            if same_family(src, &dst) {
                out.push(Packet {
                    origin: *origin,
                    proto,
                    src: *src,
                    dst,
                    port,
                });
            }
        }
    };
    for svc in &c.services {
        // Only a pod on this node can reach its own service through this node.
        let hairpin: Vec<(Origin, IpAddr)> = svc
            .endpoints
            .iter()
            .filter(|e| e.node_name.as_deref() == Some(c.node.name.as_str()))
            .take(1)
            .map(|e| (Origin::Pod, e.address))
            .collect();
        // A node's connection to its own local VIP loops back with the VIP as its source.
        let mut extra = hairpin.clone();
        extra.extend(
            svc.load_balancer_ips
                .iter()
                .map(|ip| (Origin::External, *ip)),
        );
        for sp in &svc.ports {
            for ip in svc
                .cluster_ips
                .iter()
                .chain(&svc.load_balancer_ips)
                .chain(&svc.external_ips)
            {
                to(*ip, sp.protocol, sp.port as u16, &extra);
            }
            if let Some(np) = sp.node_port {
                for a in &c.node.addresses {
                    to(*a, sp.protocol, np as u16, &hairpin);
                }
            }
        }
        if let Some(ip) = svc.cluster_ips.first() {
            let served: Vec<i32> = svc.ports.iter().map(|p| p.port).collect();
            let wrong = (1..)
                .map(|d| 4000 + d)
                .find(|p| !served.contains(p))
                .unwrap();
            to(*ip, Protocol::Tcp, wrong as u16, &[]);
        }
    }
    for net in &c.config.service_cidrs {
        if let Some(a) = net.iter().nth(65_000) {
            to(a, Protocol::Udp, 53, &[]);
        }
    }
    to(v4("192.0.2.200"), Protocol::Tcp, 80, &[]);
    out
}

/// What the tracer says for `p`, in the reference model's terms; `Err` when its branches end
/// in different kinds of outcome (never the case for a first packet).
pub fn traced(
    prepared: &nfcompile::trace::Prepared,
    c: &Cluster,
    p: &Packet,
) -> Result<Expected, String> {
    use nfcompile::trace::{self, Outcome};
    let t = prepared
        .trace(
            &c.node.addresses,
            &trace::Packet {
                proto: p.proto,
                src: p.src,
                src_port: 40000,
                dst: p.dst,
                dst_port: p.port,
                origin: p.origin,
            },
        )
        .map_err(|e| e.to_string())?;
    let mut dnat = BTreeSet::new();
    let mut other = BTreeSet::new();
    for b in &t.branches {
        match &b.outcome {
            Outcome::Dnat { to, masquerade } => {
                dnat.insert((to.clone(), *masquerade));
            }
            Outcome::Drop => {
                other.insert("drop");
            }
            Outcome::Reject => {
                other.insert("reject");
            }
            Outcome::Accept { .. } => {
                other.insert("accept");
            }
        }
    }
    match (dnat.is_empty(), other.iter().next().copied(), other.len()) {
        (false, None, _) => Ok(Expected::Dnat(dnat)),
        (true, Some("drop"), 1) => Ok(Expected::Drop),
        (true, Some("reject"), 1) => Ok(Expected::Reject),
        (true, Some("accept"), 1) => Ok(Expected::Accept),
        _ => Err(format!("mixed outcomes: {dnat:?} {other:?}")),
    }
}

/// Compile `c`, trace every packet of [`packets`] and compare with [`expect`]: the number of
/// packets checked, or the first disagreement.
pub fn check(c: &Cluster) -> Result<usize, String> {
    check_some(c, |n| (0..n).collect())
}

/// [`check`] on the packets `pick` chooses (by index, given how many [`packets`] has): the
/// fuzz target lets its bytes choose a few, so that each execution stays cheap and coverage
/// steers which frontends get traced.
pub fn check_some(c: &Cluster, pick: impl FnOnce(usize) -> Vec<usize>) -> Result<usize, String> {
    let ruleset = nfcompile::compile(c).map_err(|e| format!("does not compile: {e}"))?;
    let prepared = nfcompile::trace::Prepared::new(&ruleset);
    let packets = packets(c);
    let chosen = pick(packets.len());
    for &i in &chosen {
        let p = &packets[i];
        let want = expect(c, p);
        let got = traced(&prepared, c, p)?;
        if got != want {
            return Err(format!(
                "{:?} {:?} {} → {}:{}: the reference says {want:?}, the tracer {got:?}",
                p.origin, p.proto, p.src, p.dst, p.port
            ));
        }
    }
    Ok(chosen.len())
}
