//! Which endpoints a service port sends traffic to from this node, as kube-proxy decides it
//! (`CategorizeEndpoints`): ready endpoints, else serving-and-terminating ones; topology hints
//! for cluster-wide traffic; only this node's endpoints for `Local` policies.

use std::net::IpAddr;

use crate::ir::{Endpoint, Family, Node, Service, ServicePort};

/// One destination: the address and target port DNAT rewrites to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub addr: IpAddr,
    pub port: u16,
    pub local: bool,
    /// Slots per copy of the list (see [`super::slots`]).
    pub weight: u32,
}

/// The endpoint lists of one service port in one family, seen from one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Cluster-wide choice (topology-aware), for `Cluster` policies and short-circuited traffic.
    pub cluster: Vec<Target>,
    /// This node's endpoints, for `Local` policies.
    pub local: Vec<Target>,
    /// Whether any usable endpoint exists anywhere: without one, clients are rejected.
    pub any: bool,
}

struct Candidate<'a> {
    endpoint: &'a Endpoint,
    target: Target,
}

/// The port `ep` serves `port` on: its port of the same name and protocol, if it has one.
pub fn target_port(ep: &Endpoint, port: &ServicePort) -> Option<u16> {
    let to = ep
        .ports
        .iter()
        .find(|p| p.name == port.name && p.protocol == port.protocol)?;
    u16::try_from(to.port).ok()
}

/// Choose the endpoints of `port` in `family` for traffic handled on `node`.
pub fn choose(svc: &Service, port: &ServicePort, family: Family, node: &Node) -> Targets {
    let mut candidates: Vec<Candidate> = svc
        .endpoints
        .iter()
        .filter(|ep| Family::of(&ep.address) == family)
        .filter_map(|ep| {
            let target = Target {
                addr: ep.address,
                port: target_port(ep, port)?,
                local: ep.node_name.as_deref() == Some(node.name.as_str()),
                weight: ep.weight,
            };
            Some(Candidate {
                endpoint: ep,
                target,
            })
        })
        .collect();
    // The same address:port in two slices is one endpoint (kube-proxy dedups too); the first
    // one given wins. Sorting also fixes the slot order whatever the input order.
    candidates.sort_by_key(|c| (c.target.addr, c.target.port));
    candidates.dedup_by_key(|c| (c.target.addr, c.target.port));

    let usable =
        |c: &&Candidate| c.endpoint.ready || (c.endpoint.serving && c.endpoint.terminating);
    let any = candidates.iter().any(|c| usable(&c));

    let topology = Topology::of(&candidates, node);
    let mut cluster = pick(&candidates, |c| {
        c.endpoint.ready && topology.allows(c, node)
    });
    if cluster.is_empty() {
        cluster = pick(&candidates, |c| {
            c.endpoint.serving && c.endpoint.terminating && topology.allows(c, node)
        });
    }
    let mut local = pick(&candidates, |c| c.target.local && c.endpoint.ready);
    if local.is_empty() {
        local = pick(&candidates, |c| {
            c.target.local && c.endpoint.serving && c.endpoint.terminating
        });
    }
    Targets {
        cluster,
        local,
        any,
    }
}

fn pick(candidates: &[Candidate], keep: impl Fn(&Candidate) -> bool) -> Vec<Target> {
    // Candidates are sorted, so slot order does not depend on input order.
    candidates
        .iter()
        .filter(|c| keep(c))
        .map(|c| c.target)
        .collect()
}

/// kube-proxy's `topologyModeFromHints`: hints are used only when every ready endpoint has
/// them and at least one is meant for this node (or zone); otherwise all endpoints are used.
enum Topology {
    None,
    SameNode,
    SameZone(String),
}

impl Topology {
    fn of(candidates: &[Candidate], node: &Node) -> Topology {
        if candidates.iter().all(|c| c.endpoint.hints.is_none()) {
            return Topology::None; // the common case: no hints at all
        }
        let ready: Vec<&Candidate> = candidates.iter().filter(|c| c.endpoint.ready).collect();
        if ready.is_empty() {
            return Topology::None;
        }
        let hints = |c: &Candidate| c.endpoint.hints.clone().unwrap_or_default();
        let all_node_hints = ready.iter().all(|c| !hints(c).for_nodes.is_empty());
        if all_node_hints
            && ready
                .iter()
                .any(|c| hints(c).for_nodes.contains(&node.name))
        {
            return Topology::SameNode;
        }
        if let Some(zone) = &node.zone {
            let all_zone_hints = ready.iter().all(|c| !hints(c).for_zones.is_empty());
            if all_zone_hints && ready.iter().any(|c| hints(c).for_zones.contains(zone)) {
                return Topology::SameZone(zone.clone());
            }
        }
        Topology::None
    }

    fn allows(&self, c: &Candidate, node: &Node) -> bool {
        let hints = c.endpoint.hints.as_ref();
        match self {
            Topology::None => true,
            Topology::SameNode => hints.is_some_and(|h| h.for_nodes.contains(&node.name)),
            Topology::SameZone(zone) => hints.is_some_and(|h| h.for_zones.contains(zone)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ServiceBuilder;
    use crate::ir::{EndpointPort, Hints, Protocol};

    fn node() -> Node {
        Node {
            name: "n1".into(),
            zone: Some("a".into()),
            addresses: vec!["192.168.0.1".parse().unwrap()],
            pod_cidrs: vec![],
        }
    }

    fn ep(addr: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            address: addr.parse().unwrap(),
            node_name: Some(node.into()),
            ready,
            serving,
            terminating,
            hints: None,
            weight: 1,
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        }
    }

    fn svc(eps: Vec<Endpoint>) -> Service {
        let mut b = ServiceBuilder::new("default", "web", "10.96.0.1".parse().unwrap()).port(
            "http",
            Protocol::Tcp,
            80,
        );
        for e in eps {
            b = b.raw_endpoint(e);
        }
        b.build()
    }

    fn addrs(ts: &[Target]) -> Vec<String> {
        ts.iter().map(|t| t.addr.to_string()).collect()
    }

    #[test]
    fn ready_endpoints_win_over_terminating() {
        let s = svc(vec![
            ep("10.0.0.1", "n1", true, true, false),
            ep("10.0.0.2", "n2", false, true, true),
        ]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert_eq!(addrs(&t.cluster), ["10.0.0.1"]);
        assert_eq!(addrs(&t.local), ["10.0.0.1"]);
        assert!(t.any);
    }

    #[test]
    fn serving_terminating_used_when_nothing_is_ready() {
        let s = svc(vec![
            ep("10.0.0.1", "n2", false, true, true),
            ep("10.0.0.2", "n2", false, false, true),
        ]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert_eq!(addrs(&t.cluster), ["10.0.0.1"]);
        assert!(t.local.is_empty());
        assert!(t.any);
    }

    #[test]
    fn not_ready_and_not_serving_means_no_endpoints() {
        let s = svc(vec![ep("10.0.0.1", "n1", false, false, false)]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert!(t.cluster.is_empty() && t.local.is_empty() && !t.any);
    }

    #[test]
    fn port_names_must_match() {
        let mut e = ep("10.0.0.1", "n1", true, true, false);
        e.ports[0].name = "metrics".into();
        let s = svc(vec![e]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert!(!t.any);
    }

    #[test]
    fn zone_hints_filter_when_all_endpoints_have_them() {
        let mut a = ep("10.0.0.1", "n2", true, true, false);
        a.hints = Some(Hints {
            for_zones: vec!["a".into()],
            for_nodes: vec![],
        });
        let mut b = ep("10.0.0.2", "n3", true, true, false);
        b.hints = Some(Hints {
            for_zones: vec!["b".into()],
            for_nodes: vec![],
        });
        let s = svc(vec![a.clone(), b.clone()]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert_eq!(addrs(&t.cluster), ["10.0.0.1"]);

        // One endpoint without hints: hints are ignored.
        let c = ep("10.0.0.3", "n3", true, true, false);
        let s = svc(vec![a, b, c]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert_eq!(t.cluster.len(), 3);
    }

    #[test]
    fn node_hints_take_precedence() {
        let mut a = ep("10.0.0.1", "n2", true, true, false);
        a.hints = Some(Hints {
            for_zones: vec!["a".into()],
            for_nodes: vec!["n2".into()],
        });
        let mut b = ep("10.0.0.2", "n1", true, true, false);
        b.hints = Some(Hints {
            for_zones: vec!["a".into()],
            for_nodes: vec!["n1".into()],
        });
        let s = svc(vec![a, b]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert_eq!(addrs(&t.cluster), ["10.0.0.2"]);
    }

    #[test]
    fn duplicates_across_slices_count_once() {
        let s = svc(vec![
            ep("10.0.0.1", "n1", true, true, false),
            ep("10.0.0.1", "n1", true, true, false),
        ]);
        let t = choose(&s, &s.ports[0], Family::Ipv4, &node());
        assert_eq!(t.cluster.len(), 1);
    }
}
