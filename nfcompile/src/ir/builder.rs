//! Builders for embedders that construct the IR in Rust rather than parse it.
//!
//! ```
//! use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
//! use nfcompile::ir::Protocol;
//!
//! let cluster = ClusterBuilder::new("node-1", ["192.168.1.10".parse().unwrap()])
//!     .cluster_cidr("10.244.0.0/16".parse().unwrap())
//!     .service(
//!         ServiceBuilder::new("default", "web", "10.96.0.10".parse().unwrap())
//!             .port("http", Protocol::Tcp, 80)
//!             .endpoint("10.244.1.5".parse().unwrap(), Some("node-1"), &[("http", 8080)])
//!             .build(),
//!     )
//!     .build();
//! let ruleset = nfcompile::compile(&cluster).unwrap();
//! assert!(nfcompile::emit::text::write_string(&ruleset).contains("10.244.1.5 . 8080"));
//! ```

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::*;

pub struct ClusterBuilder {
    cluster: Cluster,
}

impl ClusterBuilder {
    pub fn new(node: &str, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        ClusterBuilder {
            cluster: Cluster {
                node: Node {
                    name: node.to_string(),
                    zone: None,
                    addresses: addresses.into_iter().collect(),
                    pod_cidrs: Vec::new(),
                },
                config: ProxyConfig::default(),
                services: Vec::new(),
                origin: Origin::Native,
            },
        }
    }

    pub fn zone(mut self, zone: &str) -> Self {
        self.cluster.node.zone = Some(zone.to_string());
        self
    }

    pub fn cluster_cidr(mut self, cidr: IpNetwork) -> Self {
        self.cluster.config.cluster_cidrs.push(cidr);
        self
    }

    pub fn service_cidr(mut self, cidr: IpNetwork) -> Self {
        self.cluster.config.service_cidrs.push(cidr);
        self
    }

    pub fn masquerade_bit(mut self, bit: i32) -> Self {
        self.cluster.config.masquerade_bit = bit;
        self
    }

    pub fn masquerade_all(mut self, on: bool) -> Self {
        self.cluster.config.masquerade_all = on;
        self
    }

    pub fn config(mut self, config: ProxyConfig) -> Self {
        self.cluster.config = config;
        self
    }

    pub fn service(mut self, service: Service) -> Self {
        self.cluster.services.push(service);
        self
    }

    pub fn build(self) -> Cluster {
        self.cluster
    }
}

#[derive(Clone)]
pub struct ServiceBuilder {
    service: Service,
}

impl ServiceBuilder {
    pub fn new(namespace: &str, name: &str, cluster_ip: IpAddr) -> Self {
        ServiceBuilder {
            service: Service {
                namespace: namespace.to_string(),
                name: name.to_string(),
                cluster_ips: vec![cluster_ip],
                external_ips: Vec::new(),
                load_balancer_ips: Vec::new(),
                ports: Vec::new(),
                external_traffic_policy: TrafficPolicy::Cluster,
                internal_traffic_policy: TrafficPolicy::Cluster,
                session_affinity_timeout: None,
                load_balancer_source_ranges: Vec::new(),
                load_balancing: Default::default(),
                maglev_table_size: crate::ir::DEFAULT_MAGLEV_TABLE_SIZE,
                endpoints: Vec::new(),
                endpoint_origins: Vec::new(),
            },
        }
    }

    /// A second cluster IP, of the other family (dual-stack).
    pub fn cluster_ip(mut self, ip: IpAddr) -> Self {
        self.service.cluster_ips.push(ip);
        self
    }

    pub fn port(mut self, name: &str, protocol: Protocol, port: i32) -> Self {
        self.service.ports.push(ServicePort {
            name: name.to_string(),
            protocol,
            port,
            node_port: None,
        });
        self
    }

    pub fn node_port(mut self, name: &str, protocol: Protocol, port: i32, node_port: i32) -> Self {
        self.service.ports.push(ServicePort {
            name: name.to_string(),
            protocol,
            port,
            node_port: Some(node_port),
        });
        self
    }

    pub fn external_ip(mut self, ip: IpAddr) -> Self {
        self.service.external_ips.push(ip);
        self
    }

    pub fn load_balancer_ip(mut self, ip: IpAddr) -> Self {
        self.service.load_balancer_ips.push(ip);
        self
    }

    pub fn source_range(mut self, range: IpNetwork) -> Self {
        self.service.load_balancer_source_ranges.push(range);
        self
    }

    pub fn external_traffic_policy(mut self, policy: TrafficPolicy) -> Self {
        self.service.external_traffic_policy = policy;
        self
    }

    pub fn internal_traffic_policy(mut self, policy: TrafficPolicy) -> Self {
        self.service.internal_traffic_policy = policy;
        self
    }

    pub fn session_affinity(mut self, timeout_seconds: i32) -> Self {
        self.service.session_affinity_timeout = Some(timeout_seconds);
        self
    }

    /// A ready endpoint; `ports` pairs service port names with target ports (protocol taken
    /// from the service port of that name, TCP if none).
    pub fn endpoint(mut self, address: IpAddr, node: Option<&str>, ports: &[(&str, i32)]) -> Self {
        let ports = ports
            .iter()
            .map(|(name, port)| EndpointPort {
                name: name.to_string(),
                protocol: self
                    .service
                    .ports
                    .iter()
                    .find(|p| p.name == *name)
                    .map_or(Protocol::Tcp, |p| p.protocol),
                port: *port,
            })
            .collect();
        self.service.endpoints.push(Endpoint {
            address,
            node_name: node.map(str::to_string),
            ready: true,
            serving: true,
            terminating: false,
            hints: None,
            weight: 1,
            ports,
        });
        self
    }

    /// Any endpoint, for conditions and hints the shorthand above does not cover.
    pub fn raw_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.service.endpoints.push(endpoint);
        self
    }

    pub fn build(self) -> Service {
        self.service
    }
}
