//! Facts of the node: where node ports are accepted, what counts as "from a pod", and the
//! address ranges that come from the configuration.

use super::*;

/// Where node ports are accepted in this family.
pub(super) enum NodePortDest {
    None,
    Addresses(Vec<IpAddr>),
    /// Any local address but loopback (`nodePortAddresses` covering the whole family).
    AnyLocal,
}

/// The same addresses as `ranges`, without overlaps (interval sets refuse them). Two CIDRs are
/// either disjoint or one holds the other, so dropping the held ones is enough.
pub(super) fn disjoint(mut ranges: Vec<IpNetwork>) -> Vec<IpNetwork> {
    ranges.sort_by_key(|r| r.prefix());
    let mut kept: Vec<IpNetwork> = Vec::new();
    for r in ranges {
        let held = kept.iter().any(|k| {
            Family::of_net(k) == Family::of_net(&r)
                && k.prefix() <= r.prefix()
                && k.contains(r.network())
        });
        if !held {
            kept.push(r);
        }
    }
    kept.sort();
    kept
}

pub(super) fn loopback(family: Family) -> IpNetwork {
    match family {
        Family::Ipv4 => "127.0.0.0/8".parse().expect("valid"),
        Family::Ipv6 => "::1/128".parse().expect("valid"),
    }
}

/// The match for "this packet comes from a pod", per `detectLocalMode`.
pub(super) fn from_pod_match(cluster: &Cluster, family: Family) -> Option<Match> {
    let cidrs = |list: &[IpNetwork]| -> Option<Match> {
        let mine: Vec<Value> = disjoint(
            list.iter()
                .filter(|c| Family::of_net(c) == family)
                .copied()
                .collect(),
        )
        .into_iter()
        .map(Value::Prefix)
        .collect();
        match mine.len() {
            0 => None,
            1 => Some(Match::Cmp {
                expr: Expr::Saddr(family),
                value: mine[0],
                negate: false,
            }),
            _ => Some(Match::Lookup {
                key: vec![Expr::Saddr(family)],
                set: SetRef::Anonymous(mine),
                negate: false,
            }),
        }
    };
    match &cluster.config.detect_local {
        DetectLocal::ClusterCidr => cidrs(&cluster.config.cluster_cidrs),
        DetectLocal::NodeCidr => cidrs(&cluster.node.pod_cidrs),
        DetectLocal::InterfaceNamePrefix(p) => Some(Match::IifName {
            name: p.clone(),
            prefix: true,
            negate: false,
        }),
        DetectLocal::BridgeInterface(b) => Some(Match::IifName {
            name: b.clone(),
            prefix: false,
            negate: false,
        }),
    }
}

/// The node's addresses that accept node ports, in both families (for `AnyLocal`, every
/// address of the node but loopback: the ones the cluster knows of).
pub fn node_port_addresses(cluster: &Cluster) -> Vec<IpAddr> {
    [Family::Ipv4, Family::Ipv6]
        .into_iter()
        .flat_map(|f| match node_port_dest(cluster, f) {
            NodePortDest::None => Vec::new(),
            NodePortDest::Addresses(ips) => ips,
            NodePortDest::AnyLocal => cluster
                .node
                .addresses
                .iter()
                .filter(|a| Family::of(a) == f && !a.is_loopback())
                .copied()
                .collect(),
        })
        .collect()
}

pub(super) fn node_port_dest(cluster: &Cluster, family: Family) -> NodePortDest {
    let node_ips: Vec<IpAddr> = cluster
        .node
        .addresses
        .iter()
        .filter(|a| Family::of(a) == family && !a.is_loopback())
        .copied()
        .collect();
    let config = &cluster.config.node_port_addresses;
    let primary = || node_ips.first().copied().into_iter().collect::<Vec<_>>();
    let mut chosen: Vec<IpAddr> = Vec::new();
    if config.is_empty() {
        chosen = primary();
    }
    for entry in config {
        match entry {
            NodePortAddresses::Primary => chosen.extend(primary()),
            NodePortAddresses::Cidr(net) if Family::of_net(net) == family => {
                if net.prefix() == 0 {
                    return NodePortDest::AnyLocal;
                }
                chosen.extend(node_ips.iter().filter(|ip| net.contains(**ip)));
            }
            NodePortAddresses::Cidr(_) => {}
        }
    }
    chosen.sort();
    chosen.dedup();
    if chosen.is_empty() {
        NodePortDest::None
    } else {
        NodePortDest::Addresses(chosen)
    }
}
