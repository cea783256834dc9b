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
