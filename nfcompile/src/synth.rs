//! Synthetic clusters of any size, for benchmarks, scale tests and property tests.
//!
//! The shape follows the scale benchmark: services × endpoints spread over nodes,
//! every 10th service a NodePort, every 20th a LoadBalancer, every 40th with
//! `externalTrafficPolicy: Local`, every 50th with session affinity. Deterministic.

use std::net::{IpAddr, Ipv4Addr};

use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
use crate::ir::{Cluster, Endpoint, EndpointPort, Protocol, TrafficPolicy};

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub services: usize,
    pub endpoints: usize,
    pub nodes: usize,
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// Service `i` gets cluster IP 10.96.0.0/12 + i, endpoints in 10.128.0.0/9, LB IPs in
/// 172.16.0.0/12, node ports from 30000. Compiled for `node-0` (192.168.0.1).
pub fn cluster(shape: Shape) -> Cluster {
    let nodes = shape.nodes.max(1);
    let mut b = ClusterBuilder::new("node-0", [v4(0xC0A8_0001)])
        .cluster_cidr("10.128.0.0/9".parse().expect("valid"))
        .service_cidr("10.96.0.0/12".parse().expect("valid"));
    let mut endpoint_ip = 0x0A80_0001u32; // 10.128.0.1
    for i in 0..shape.services {
        let mut s = ServiceBuilder::new(
            "default",
            &format!("svc-{i}"),
            v4(0x0A60_0000 + 1 + i as u32),
        );
        s = if i % 10 == 0 && i < 20000 {
            s.node_port("http", Protocol::Tcp, 80, 30000 + (i / 10) as i32)
        } else {
            s.port("http", Protocol::Tcp, 80)
        };
        if i % 20 == 0 {
            s = s.load_balancer_ip(v4(0xAC10_0000 + i as u32));
        }
        if i % 40 == 0 {
            s = s.external_traffic_policy(TrafficPolicy::Local);
        }
        if i % 50 == 0 {
            s = s.session_affinity(10800);
        }
        for e in 0..shape.endpoints {
            let node = (i + e) % nodes;
            s = s.raw_endpoint(Endpoint {
                address: v4(endpoint_ip),
                node_name: Some(format!("node-{node}")),
                ready: true,
                serving: true,
                terminating: false,
                hints: None,
                weight: 1,
                ports: vec![EndpointPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080,
                }],
            });
            endpoint_ip += 1;
        }
        b = b.service(s.build());
    }
    b.build()
}

/// A small deterministic generator (xorshift64*), so property tests need no dependency and
/// every failure reproduces from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Where a generator's decisions come from: a seeded [`Rng`] for property tests, or a fuzzer's
/// bytes (so coverage guidance steers the cluster's shape).
pub trait Choices {
    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64;

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

impl Choices for Rng {
    fn below(&mut self, n: u64) -> u64 {
        Rng::below(self, n)
    }
}

/// Bounds of [`random`]'s services: endpoints per service, weight of one endpoint, and the
/// Maglev table sizes it picks, each of which must hold the largest list (else the cluster
/// is invalid: a fuzzer found that with 13 entries for 6 endpoints of weight 4).
pub const RANDOM_MAX_ENDPOINTS: usize = 6;
pub const RANDOM_MAX_WEIGHT: u32 = 4;
pub const RANDOM_MAGLEV_SIZES: [u32; 2] = [31, 251];

/// A random but valid cluster of up to `services` services, exercising every feature the
/// lowering has: families, protocols, traffic policies, affinity, source ranges, node ports,
/// endpoint conditions, masquerade settings and pod detection modes.
pub fn random(seed: u64, services: usize) -> Cluster {
    random_from(&mut Rng::new(seed), services)
}

/// [`random`] with its decisions taken from `r`.
pub fn random_from(r: &mut impl Choices, services: usize) -> Cluster {
    use crate::ir::{DetectLocal, Hints, NodePortAddresses, ServicePort};
    use std::net::Ipv6Addr;

    let dual = r.chance(50);
    let v6 = |n: u32| {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            (n >> 16) as u16,
            n as u16,
        ))
    };
    let mut node_addrs = vec![v4(0xC0A8_0001)];
    if dual {
        node_addrs.push(v6(0x1_0001));
    }
    if r.chance(30) {
        node_addrs.push(v4(0xAC14_0001)); // a second IPv4 address, not primary
    }
    let mut b = ClusterBuilder::new("node-0", node_addrs.clone())
        .cluster_cidr("10.128.0.0/9".parse().expect("valid"))
        .masquerade_bit(r.below(32) as i32)
        .masquerade_all(r.chance(20));
    if dual {
        b = b.cluster_cidr("fd00:10::/32".parse().expect("valid"));
    }
    if r.chance(50) {
        b = b.service_cidr("10.96.0.0/12".parse().expect("valid"));
    }
    let mut cluster = b.build();
    cluster.node.zone = r.chance(50).then(|| "zone-a".to_string());
    cluster.config.detect_local = match r.below(3) {
        0 => DetectLocal::ClusterCidr,
        1 => DetectLocal::InterfaceNamePrefix("veth".into()),
        _ => DetectLocal::BridgeInterface("cni0".into()),
    };
    cluster.config.node_port_addresses = match r.below(3) {
        0 => vec![],
        1 => vec![
            NodePortAddresses::Primary,
            NodePortAddresses::Cidr("172.20.0.0/16".parse().expect("valid")),
        ],
        _ => vec![NodePortAddresses::Cidr("0.0.0.0/0".parse().expect("valid"))],
    };

    let mut next_ip = 1u32;
    let mut take = || {
        next_ip += 1;
        next_ip
    };
    let mut node_port = 30000;
    for i in 0..services {
        let want_v4 = !dual || r.below(3) != 1;
        let want_v6 = dual && (!want_v4 || r.chance(50));
        let n = take();
        let first = if want_v4 {
            v4(0x0A60_0000 + n)
        } else {
            v6(0x60_0000 + n)
        };
        let mut s = ServiceBuilder::new("ns", &format!("svc-{i}"), first);
        if want_v4 && want_v6 {
            s = s.cluster_ip(v6(0x60_0000 + n));
        }
        let families: Vec<bool> = [want_v4.then_some(true), want_v6.then_some(false)]
            .into_iter()
            .flatten()
            .collect();
        let mut svc = s.build();
        for p in 0..=r.below(2) as usize {
            let protocol = Protocol::ALL[r.below(3) as usize];
            let port = 80 + p as i32 * 1000 + r.below(3) as i32;
            let np = r.chance(40).then(|| {
                node_port += 1;
                node_port
            });
            svc.ports.push(ServicePort {
                name: format!("p{p}"),
                protocol,
                port,
                node_port: np,
            });
        }
        for _ in 0..r.below(3) {
            let n = take();
            let ipv4 = families[r.below(families.len() as u64) as usize];
            let ip = if ipv4 {
                v4(0xAC10_0000 + n)
            } else {
                v6(0xAC_0000 + n)
            };
            if r.chance(70) {
                svc.load_balancer_ips.push(ip);
            } else {
                svc.external_ips.push(ip);
            }
        }
        if r.chance(30) {
            svc.load_balancer_source_ranges
                .push("203.0.113.0/24".parse().expect("valid"));
            if r.chance(50) {
                svc.load_balancer_source_ranges
                    .push("192.168.0.0/16".parse().expect("valid"));
            }
            if dual && r.chance(50) {
                svc.load_balancer_source_ranges
                    .push("2001:db8::/32".parse().expect("valid"));
            }
        }
        if r.chance(30) {
            svc.external_traffic_policy = TrafficPolicy::Local;
        }
        if r.chance(20) {
            svc.internal_traffic_policy = TrafficPolicy::Local;
        }
        if r.chance(25) {
            svc.session_affinity_timeout = Some([60, 600, 10800][r.below(3) as usize]);
        }
        match r.below(100) {
            0..=14 => svc.load_balancing = crate::ir::LoadBalancing::RoundRobin,
            15..=29 => {
                svc.load_balancing = crate::ir::LoadBalancing::Maglev;
                svc.maglev_table_size = RANDOM_MAGLEV_SIZES[r.below(2) as usize];
            }
            _ => {}
        }
        let zones = r.chance(30);
        for _ in 0..r.below(RANDOM_MAX_ENDPOINTS as u64 + 1) {
            let n = take();
            let ipv4 = families[r.below(families.len() as u64) as usize];
            let ready = r.chance(80);
            svc.endpoints.push(Endpoint {
                address: if ipv4 {
                    v4(0x0A80_0000 + n)
                } else {
                    v6(0x10_0000_u32.wrapping_add(n))
                },
                node_name: Some(format!("node-{}", r.below(4))),
                ready,
                serving: ready || r.chance(50),
                terminating: !ready && r.chance(70),
                hints: zones.then(|| Hints {
                    for_zones: vec![["zone-a", "zone-b"][r.below(2) as usize].to_string()],
                    for_nodes: vec![],
                }),
                weight: if r.chance(15) {
                    1 + r.below(RANDOM_MAX_WEIGHT as u64) as u32
                } else {
                    1
                },
                ports: svc
                    .ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: p.name.clone(),
                        protocol: p.protocol,
                        port: 8000 + p.port,
                    })
                    .collect(),
            });
        }
        cluster.services.push(svc);
    }
    // Drawn last, so the clusters of earlier seeds stay what they were.
    cluster.config.counters = r.chance(30);
    cluster
}

/// One ClusterIP service (`default/web`, 10.96.0.10 port 80) with `endpoints` endpoints
/// on another node: one element each in the `endpoints` map, for tests of set sizes.
pub fn one_service(endpoints: usize) -> Cluster {
    let mut c = ClusterBuilder::new("node-0", [v4(0xC0A8_0001)]).build();
    let mut s =
        ServiceBuilder::new("default", "web", v4(0x0A60_000A)).port("http", Protocol::Tcp, 80);
    for e in 0..endpoints {
        s = s.endpoint(
            v4(0x0AC8_0001 + e as u32),
            Some("node-2"),
            &[("http", 8080)],
        );
    }
    c.services.push(s.build());
    c
}

#[cfg(test)]
mod tests {
    /// Regression (fuzz/seeds/diff_pairs/crash-86a19ccc…): every Maglev table the generator
    /// picks holds its largest possible list.
    #[test]
    fn random_maglev_tables_hold_the_largest_list() {
        let largest = super::RANDOM_MAX_ENDPOINTS as u32 * super::RANDOM_MAX_WEIGHT;
        assert!(super::RANDOM_MAGLEV_SIZES.iter().all(|m| *m >= largest));
    }

    #[test]
    fn random_clusters_are_valid_and_deterministic() {
        for seed in 0..200 {
            let c = super::random(seed, 25);
            if let Err(e) = crate::validate::validate(&c) {
                panic!("seed {seed}: {e}");
            }
            assert_eq!(c, super::random(seed, 25));
        }
    }
}
