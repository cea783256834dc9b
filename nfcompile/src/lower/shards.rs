//! Endpoint-map shards: how many, and which one a service's frontends use.

use super::*;

/// Shards for an estimated element count: a power of two, so that the shard of a frontend
/// only moves when the cluster grows or shrinks past a threshold.
pub(super) fn shard_count(estimate: usize) -> u8 {
    estimate
        .div_ceil(SHARD_ELEMENTS)
        .max(1)
        .next_power_of_two()
        .min(64) as u8
}

/// A service's shard: a stable hash (FNV-1a) of its namespace and name, independent of other
/// services. All frontends of a service share it, so an endpoint change touches one map.
pub(super) fn shard_of(svc: &Service, count: u8) -> Shard {
    let mut h: u32 = 0x811c_9dc5;
    for b in svc.namespace.bytes().chain([b'/']).chain(svc.name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    Shard {
        index: (h % u32::from(count)) as u8,
        count,
    }
}

/// An upper bound of the endpoint elements of `keyed` frontends in `family`, from the input
/// alone (before endpoint choice), to pick the shard count.
pub(super) fn estimate(cluster: &Cluster, family: Family, keyed: Keyed) -> usize {
    cluster
        .services
        .iter()
        .filter(|s| s.cluster_ips.iter().any(|ip| Family::of(ip) == family))
        .map(|s| {
            let total: usize = s
                .endpoints
                .iter()
                .filter(|e| Family::of(&e.address) == family)
                .map(|e| e.weight as usize)
                .sum();
            let frontends = match keyed {
                Keyed::Addr => {
                    let external = s
                        .external_ips
                        .iter()
                        .chain(&s.load_balancer_ips)
                        .filter(|ip| Family::of(ip) == family)
                        .count();
                    s.ports.len() * (1 + external)
                }
                Keyed::NodePort => s.ports.iter().filter(|p| p.node_port.is_some()).count(),
            };
            frontends * slots_filled(total)
        })
        .sum()
}
