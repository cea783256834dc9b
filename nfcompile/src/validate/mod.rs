//! The validator: every check the lowering relies on, run once, reporting all problems at once.
//!
//! Lowering takes a [`Validated`] only, so nothing reaches a backend unchecked (naga's habit).
//! Errors name fields in the terms of the input they came from ([`crate::ir::Origin`]).

mod names;

use rustc_hash::FxHashMap;
use std::net::IpAddr;

use crate::error::{FieldError, Invalid};
use crate::ir::{
    Cluster, DetectLocal, Family, LoadBalancing, Origin, Protocol, Service, MAX_WEIGHT,
};

pub use names::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_port_name};

/// A Maglev table fills slots `0..size`, below the local lists' offset.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 32749;

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// Endpoint slots of one list are `0..MAX_ENDPOINTS`; local lists start at this offset.
pub const MAX_ENDPOINTS: usize = 0x8000;
/// The longest `sessionAffinityConfig.clientIP.timeoutSeconds` Kubernetes accepts.
pub const MAX_AFFINITY_TIMEOUT: i32 = 86400;

/// Proof that a [`Cluster`] passed validation; the only way into [`crate::lower`].
#[derive(Debug, Clone, Copy)]
pub struct Validated<'a> {
    cluster: &'a Cluster,
}

impl<'a> Validated<'a> {
    pub fn cluster(&self) -> &'a Cluster {
        self.cluster
    }
}

/// Check everything; on failure return every problem found, in input order.
pub fn validate(cluster: &Cluster) -> Result<Validated<'_>, Invalid> {
    let mut v = Validator {
        origin: &cluster.origin,
        errors: Vec::new(),
    };
    v.node(cluster);
    v.config(cluster);
    // Who claimed what, as (service index, port index): names are only built for errors.
    let mut frontends: FxHashMap<(IpAddr, Protocol, u16), usize> = FxHashMap::default();
    let mut node_ports: FxHashMap<(Protocol, u16), (usize, usize)> = FxHashMap::default();
    let mut seen: FxHashMap<(&str, &str), usize> =
        FxHashMap::with_capacity_and_hasher(cluster.services.len(), Default::default());
    for (i, svc) in cluster.services.iter().enumerate() {
        if let Some(first) = seen.insert((&svc.namespace, &svc.name), i) {
            v.err(
                service_object(svc),
                "",
                format!("is given twice (services[{first}] and services[{i}])"),
            );
        }
        v.service(&cluster.services, i, &mut frontends, &mut node_ports);
    }
    if v.errors.is_empty() {
        Ok(Validated { cluster })
    } else {
        Err(Invalid(v.errors))
    }
}

pub(crate) fn service_object(svc: &Service) -> String {
    format!("Service {}/{}", svc.namespace, svc.name)
}

struct Validator<'a> {
    origin: &'a Origin,
    errors: Vec<FieldError>,
}

impl Validator<'_> {
    fn err(&mut self, object: String, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(object, field, message));
    }

    fn kube(&self) -> bool {
        *self.origin == Origin::Kubernetes
    }

    fn spec(&self, field: &str) -> String {
        spec_path(self.kube(), field)
    }

    fn node(&mut self, cluster: &Cluster) {
        let node = &cluster.node;
        let (object, name_field) = if self.kube() {
            (format!("Node {}", node.name), "metadata.name")
        } else {
            ("node".to_string(), "name")
        };
        if !is_dns1123_subdomain(&node.name) {
            self.err(
                object.clone(),
                name_field,
                format!("{:?} is not a valid node name (a DNS subdomain)", node.name),
            );
        }
        if let Some(zone) = &node.zone {
            if zone.is_empty() || zone.len() > 63 || zone.contains(['"', '\\', '\n']) {
                self.err(
                    object,
                    "zone",
                    format!("{zone:?} is not a valid zone label value"),
                );
            }
        }
    }

    fn config(&mut self, cluster: &Cluster) {
        let config = &cluster.config;
        let object = if self.kube() {
            "KubeProxyConfiguration".to_string()
        } else {
            "config".to_string()
        };
        let kube = self.kube();
        let bit_field = if kube {
            "nftables.masqueradeBit"
        } else {
            "masqueradeBit"
        };
        if !(0..=31).contains(&config.masquerade_bit) {
            self.err(
                object.clone(),
                bit_field,
                format!("{} is outside 0-31", config.masquerade_bit),
            );
        }
        match &config.detect_local {
            DetectLocal::NodeCidr if cluster.node.pod_cidrs.is_empty() => self.err(
                object.clone(),
                "detectLocalMode",
                format!(
                    "is NodeCIDR but node {} has no podCIDRs",
                    cluster.node.name
                ),
            ),
            DetectLocal::InterfaceNamePrefix(name) | DetectLocal::BridgeInterface(name)
                if !is_interface_name(name) =>
            {
                self.err(
                    object.clone(),
                    if kube { "detectLocal" } else { "detectLocal.value" },
                    format!("{name:?} is not a valid interface name (1-15 characters, no quotes, spaces or slashes)"),
                )
            }
            _ => {}
        }
    }

    fn service(
        &mut self,
        services: &[Service],
        index: usize,
        frontends: &mut FxHashMap<(IpAddr, Protocol, u16), usize>,
        node_ports: &mut FxHashMap<(Protocol, u16), (usize, usize)>,
    ) {
        let svc = &services[index];
        let object = service_object(svc);
        let kube = self.kube();
        let meta = |f: &str| {
            if kube {
                format!("metadata.{f}")
            } else {
                f.to_string()
            }
        };
        if !is_dns1123_label(&svc.namespace) {
            self.err(
                object.clone(),
                meta("namespace"),
                format!("{:?} is not a valid namespace (a DNS label)", svc.namespace),
            );
        }
        if !is_dns1035_label(&svc.name) {
            self.err(
                object.clone(),
                meta("name"),
                format!(
                    "{:?} is not a valid service name (lower-case letters, digits and '-', starting with a letter, at most 63)",
                    svc.name
                ),
            );
        }

        // Families: one cluster IP per family.
        let mut families = Vec::new();
        if svc.cluster_ips.is_empty() {
            self.err(object.clone(), self.spec("clusterIPs"), "is empty");
        }
        for (i, ip) in svc.cluster_ips.iter().enumerate() {
            let family = Family::of(ip);
            if families.contains(&family) {
                self.err(
                    object.clone(),
                    self.spec(&format!("clusterIPs[{i}]")),
                    format!("{ip} is a second {family} cluster IP"),
                );
            }
            families.push(family);
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                self.err(
                    object.clone(),
                    self.spec(&format!("clusterIPs[{i}]")),
                    format!("{ip} cannot be a service address"),
                );
            }
        }
        let lb_field = |i: usize| {
            if kube {
                format!("status.loadBalancer.ingress[{i}].ip")
            } else {
                format!("loadBalancerIPs[{i}]")
            }
        };
        let extra: Vec<(String, &IpAddr)> = svc
            .external_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (self.spec(&format!("externalIPs[{i}]")), ip))
            .chain(
                svc.load_balancer_ips
                    .iter()
                    .enumerate()
                    .map(|(i, ip)| (lb_field(i), ip)),
            )
            .collect();
        for (field, ip) in &extra {
            if !families.contains(&Family::of(ip)) {
                self.err(
                    object.clone(),
                    field.clone(),
                    format!(
                        "{ip} is {} but the service has no {} cluster IP",
                        Family::of(ip),
                        Family::of(ip)
                    ),
                );
            }
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                self.err(
                    object.clone(),
                    field.clone(),
                    format!("{ip} cannot be a service address"),
                );
            }
        }

        // Ports.
        if svc.ports.is_empty() {
            self.err(object.clone(), self.spec("ports"), "is empty");
        }
        for (i, port) in svc.ports.iter().enumerate() {
            // Services have a handful of ports: comparing with the earlier ones beats hashing.
            let earlier = &svc.ports[..i];
            let field = |f: &str| spec_path(kube, &format!("ports[{i}].{f}"));
            if port.name.is_empty() {
                if svc.ports.len() > 1 {
                    self.err(
                        object.clone(),
                        field("name"),
                        "is empty, but a service with several ports must name each",
                    );
                }
            } else if !is_port_name(&port.name) {
                self.err(
                    object.clone(),
                    field("name"),
                    format!("{:?} is not a valid port name (at most 15 lower-case letters, digits and '-', with a letter)", port.name),
                );
            }
            if port.name.is_empty() {
                // reported above when it matters
            } else if let Some(first) = earlier.iter().position(|p| p.name == port.name) {
                self.err(
                    object.clone(),
                    field("name"),
                    format!("{:?} is also the name of ports[{first}]", port.name),
                );
            }
            let port_ok = check_port(port.port);
            if !port_ok {
                self.err(
                    object.clone(),
                    field("port"),
                    format!("{} is outside 1-65535", port.port),
                );
            } else if let Some(first) = earlier
                .iter()
                .position(|p| p.protocol == port.protocol && p.port == port.port)
            {
                self.err(
                    object.clone(),
                    field("port"),
                    format!("{}/{} is also ports[{first}]", port.port, port.protocol),
                );
            }
            if let Some(np) = port.node_port {
                if !check_port(np) {
                    self.err(
                        object.clone(),
                        field("nodePort"),
                        format!("{np} is outside 1-65535"),
                    );
                } else if let Some((other, other_port)) =
                    node_ports.insert((port.protocol, np as u16), (index, i))
                {
                    self.err(
                        object.clone(),
                        field("nodePort"),
                        format!(
                            "{np}/{} is already the node port of {} ports[{other_port}]",
                            port.protocol,
                            service_object(&services[other])
                        ),
                    );
                }
            }
            if port_ok {
                let frontend_ips = svc
                    .cluster_ips
                    .iter()
                    .chain(&svc.external_ips)
                    .chain(&svc.load_balancer_ips);
                let mut mine = Vec::new();
                for ip in frontend_ips {
                    let key = (*ip, port.protocol, port.port as u16);
                    if mine.contains(&key) {
                        continue; // an externalIP repeated as LB IP is one frontend
                    }
                    mine.push(key);
                    if let Some(other) = frontends.insert(key, index) {
                        if other != index {
                            self.err(
                                object.clone(),
                                field("port"),
                                format!(
                                    "{ip} {}/{} is already claimed by {}",
                                    port.port,
                                    port.protocol,
                                    service_object(&services[other])
                                ),
                            );
                        }
                    }
                }
            }
        }

        if let Some(timeout) = svc.session_affinity_timeout {
            if !(1..=MAX_AFFINITY_TIMEOUT).contains(&timeout) {
                self.err(
                    object.clone(),
                    self.spec(if kube {
                        "sessionAffinityConfig.clientIP.timeoutSeconds"
                    } else {
                        "sessionAffinityTimeout"
                    }),
                    format!("{timeout} is outside 1-{MAX_AFFINITY_TIMEOUT}"),
                );
            }
        }

        let slots = self.endpoints(svc, &object, &families);
        if svc.load_balancing == LoadBalancing::Maglev {
            let m = svc.maglev_table_size;
            let largest = slots.into_iter().max().unwrap_or(0);
            let problem = if !(7..=MAX_MAGLEV_TABLE_SIZE).contains(&m) || !is_prime(m) {
                Some(format!(
                    "{m} is not a prime from 7 to {MAX_MAGLEV_TABLE_SIZE}"
                ))
            } else if (m as usize) < largest {
                Some(format!(
                    "{m} is smaller than the {largest} endpoint slots (endpoints × weight) it must hold"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                let field = if kube {
                    "metadata.annotations[nfcompile.io/maglev-table-size]".to_string()
                } else {
                    "maglevTableSize".to_string()
                };
                self.err(object.clone(), field, problem);
            }
        }
    }

    /// Checks the endpoints; returns the slots (endpoints × weight) of each family.
    fn endpoints(
        &mut self,
        svc: &Service,
        service_object: &str,
        families: &[Family],
    ) -> [usize; 2] {
        let mut per_family = [0usize; 2];
        let kube = self.kube();
        // Where endpoint `i` came from, in the input's terms; built only for an error.
        let locate = |i: usize| -> (String, String) {
            match (kube, svc.endpoint_origins.get(i)) {
                (true, Some(origin)) => (
                    format!("EndpointSlice {}/{}", svc.namespace, origin.slice),
                    format!("endpoints[{}]", origin.index),
                ),
                _ => (service_object.to_string(), format!("endpoints[{i}]")),
            }
        };
        let address_field = |prefix: &str| {
            if kube {
                format!("{prefix}.addresses[0]")
            } else {
                format!("{prefix}.address")
            }
        };
        for (i, ep) in svc.endpoints.iter().enumerate() {
            let family = Family::of(&ep.address);
            if !families.contains(&family) {
                let (object, prefix) = locate(i);
                self.err(
                    object,
                    address_field(&prefix),
                    format!(
                        "{} is {family} but {service_object} has no {family} cluster IP",
                        ep.address
                    ),
                );
            }
            if ep.address.is_unspecified() || ep.address.is_multicast() || ep.address.is_loopback()
            {
                let (object, prefix) = locate(i);
                self.err(
                    object,
                    address_field(&prefix),
                    format!("{} cannot be an endpoint address", ep.address),
                );
            }
            // A list fills one slot per unit of weight: the budget is in weight, not endpoints.
            per_family[family as usize] += ep.weight as usize;
            if !(1..=MAX_WEIGHT).contains(&ep.weight) {
                let (object, prefix) = locate(i);
                let field = if kube {
                    "metadata.annotations[nfcompile.io/weights]".to_string()
                } else {
                    format!("{prefix}.weight")
                };
                self.err(
                    object,
                    field,
                    format!("{} is not from 1 to {MAX_WEIGHT}", ep.weight),
                );
            }
            if let Some(node) = &ep.node_name {
                if !is_dns1123_subdomain(node) {
                    let (object, prefix) = locate(i);
                    self.err(
                        object,
                        format!("{prefix}.nodeName"),
                        format!("{node:?} is not a valid node name"),
                    );
                }
            }
            for (j, port) in ep.ports.iter().enumerate() {
                if !check_port(port.port) {
                    let (object, prefix) = locate(i);
                    let field = if kube {
                        format!("ports[{j}].port")
                    } else {
                        format!("{prefix}.ports[{j}].port")
                    };
                    self.err(object, field, format!("{} is outside 1-65535", port.port));
                }
            }
            if let Some(hints) = &ep.hints {
                for zone in hints.for_zones.iter().chain(&hints.for_nodes) {
                    if zone.is_empty() || zone.contains(['"', '\\', '\n']) {
                        let (object, prefix) = locate(i);
                        self.err(
                            object,
                            format!("{prefix}.hints"),
                            format!("{zone:?} is not a valid zone or node name"),
                        );
                    }
                }
            }
        }
        for (family, count) in Family::ALL.into_iter().zip(per_family) {
            if count > MAX_ENDPOINTS {
                self.err(
                    service_object.to_string(),
                    "endpoints",
                    format!(
                        "has {count} {family} endpoint slots (endpoints × weight); at most {MAX_ENDPOINTS} are supported"
                    ),
                );
            }
        }
        per_family
    }
}

/// The field path of a Service field: `spec.x` in Kubernetes, `x` in native IR.
fn spec_path(kube: bool, field: &str) -> String {
    if kube {
        format!("spec.{field}")
    } else {
        field.to_string()
    }
}

fn check_port(port: i32) -> bool {
    (1..=65535).contains(&port)
}

/// What the kernel accepts as an interface name (IFNAMSIZ 16 with the NUL), minus what would need
/// quoting in nft.
fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | '*' | ':'))
}

#[cfg(test)]
mod tests;
