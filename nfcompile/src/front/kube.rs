//! Kubernetes objects → IR, reading what kube-proxy reads and nothing else.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use serde::Deserialize;

use super::Document;
use crate::error::{FieldError, InputError, Invalid};
use crate::ir::{
    Cluster, DetectLocal, Endpoint, EndpointOrigin, EndpointPort, Family, Hints, LoadBalancing,
    Node, NodePortAddresses, Origin, Protocol, ProxyConfig, Service, ServicePort, TrafficPolicy,
    DEFAULT_AFFINITY_TIMEOUT, DEFAULT_MAGLEV_TABLE_SIZE, MAX_WEIGHT,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// Per-endpoint weights on an EndpointSlice: `"10.0.0.1=1, 10.0.0.2=3"` (unlisted: 1).
pub const WEIGHTS_ANNOTATION: &str = "nfcompile.io/weights";
/// `random` (the default) or `round-robin`, on a Service.
pub const LOAD_BALANCING_ANNOTATION: &str = "nfcompile.io/load-balancing";
/// Entries of a `maglev` Service's lookup table (a prime; default 251).
pub const MAGLEV_TABLE_SIZE_ANNOTATION: &str = "nfcompile.io/maglev-table-size";
const WEIGHTS_FIELD: &str = "metadata.annotations[nfcompile.io/weights]";

fn annotation<'m>(meta: &'m ObjectMeta, key: &str) -> Option<&'m str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The fields of `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration` that shape rules.
/// Not in `k8s-openapi` (it is a component config, not an API object).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    #[serde(default)]
    pub node_port_addresses: Option<Vec<String>>,
    #[serde(default)]
    pub nftables: Option<NftablesConfig>,
    #[serde(default)]
    pub hostname_override: Option<String>,
    #[serde(default)]
    pub detect_local_mode: Option<String>,
    #[serde(default)]
    pub detect_local: Option<DetectLocalConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NftablesConfig {
    #[serde(default)]
    pub masquerade_bit: Option<i32>,
    #[serde(default)]
    pub masquerade_all: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectLocalConfig {
    #[serde(default)]
    pub bridge_interface: Option<String>,
    #[serde(default)]
    pub interface_name_prefix: Option<String>,
}

#[derive(Default)]
struct Objects {
    services: Vec<core::Service>,
    slices: Vec<discovery::EndpointSlice>,
    nodes: Vec<core::Node>,
    service_cidrs: Vec<networking::ServiceCIDR>,
    config: Option<KubeProxyConfiguration>,
}

/// Build the IR for `node` (or the configuration's `hostnameOverride`).
pub fn to_ir(
    docs: Vec<Document>,
    node: Option<&str>,
) -> Result<(Cluster, Vec<String>), InputError> {
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    for doc in docs {
        let api = doc.str_field("apiVersion").to_string();
        let kind = doc.str_field("kind").to_string();
        match (api.as_str(), kind.as_str()) {
            ("v1", "Service") => objects.services.push(doc.decode()?),
            ("v1", "Node") => objects.nodes.push(doc.decode()?),
            ("discovery.k8s.io/v1", "EndpointSlice") => objects.slices.push(doc.decode()?),
            ("networking.k8s.io/v1" | "networking.k8s.io/v1beta1", "ServiceCIDR") => {
                objects.service_cidrs.push(doc.decode()?)
            }
            ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration") => {
                if objects.config.is_some() {
                    return Err(InputError::Duplicate {
                        file: doc.file.clone(),
                        kind: "KubeProxyConfiguration",
                    });
                }
                objects.config = Some(doc.decode()?);
            }
            ("", "") => warnings.push(format!(
                "{}:{}: skipping a document without apiVersion and kind",
                doc.file, doc.line
            )),
            (api, kind) => warnings.push(format!(
                "{}:{}: skipping {} ({api} {kind} is not an input nfcompile reads)",
                doc.file,
                doc.line,
                doc.describe()
            )),
        }
    }
    Converter::default().run(objects, node, warnings)
}

#[derive(Default)]
struct Converter {
    errors: Vec<FieldError>,
}

impl Converter {
    fn err(&mut self, object: &str, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(object, field, message));
    }

    fn ip(&mut self, object: &str, field: &str, text: &str) -> Option<IpAddr> {
        match text.trim().parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(object, field, format!("{text:?} is not an IP address"));
                None
            }
        }
    }

    /// The slice's `nfcompile.io/weights` annotation, address → weight.
    fn weights(&mut self, object: &str, meta: &ObjectMeta) -> BTreeMap<IpAddr, u32> {
        let mut out = BTreeMap::new();
        let Some(text) = annotation(meta, WEIGHTS_ANNOTATION) else {
            return out;
        };
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((addr, weight)) = entry.split_once('=') else {
                self.err(
                    object,
                    WEIGHTS_FIELD,
                    format!("{entry:?} is not ADDRESS=WEIGHT"),
                );
                continue;
            };
            let Some(addr) = self.ip(object, WEIGHTS_FIELD, addr) else {
                continue;
            };
            match weight.trim().parse::<u32>() {
                Ok(w) if (1..=MAX_WEIGHT).contains(&w) => {
                    if out.insert(addr, w).is_some() {
                        self.err(object, WEIGHTS_FIELD, format!("{addr} is listed twice"));
                    }
                }
                _ => self.err(
                    object,
                    WEIGHTS_FIELD,
                    format!(
                        "weight {:?} of {addr} is not a whole number from 1 to {MAX_WEIGHT}",
                        weight.trim()
                    ),
                ),
            }
        }
        out
    }

    fn cidr(&mut self, object: &str, field: &str, text: &str) -> Option<IpNetwork> {
        let parsed: Result<IpNetwork, _> = text.trim().parse();
        match parsed {
            // Kubernetes accepts host bits in CIDRs; normalise like the kernel would mask them.
            Ok(net) => IpNetwork::new(net.network(), net.prefix()).ok(),
            Err(_) => {
                self.err(object, field, format!("{text:?} is not a CIDR"));
                None
            }
        }
    }

    fn run(
        mut self,
        objects: Objects,
        node: Option<&str>,
        mut warnings: Vec<String>,
    ) -> Result<(Cluster, Vec<String>), InputError> {
        let config_obj = objects.config.unwrap_or_default();
        let node_name = node
            .map(str::to_string)
            .or_else(|| config_obj.hostname_override.clone())
            .ok_or(InputError::NoNode)?;
        let known: Vec<String> = objects
            .nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let node_obj = objects
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
            .ok_or_else(|| InputError::UnknownNode {
                name: node_name.clone(),
                known,
            })?;
        let node = self.node(node_obj, &node_name);
        let mut config = self.config(&config_obj);
        for cidr in &objects.service_cidrs {
            let object = format!(
                "ServiceCIDR {}",
                cidr.metadata.name.as_deref().unwrap_or("")
            );
            let cidrs = cidr
                .spec
                .as_ref()
                .and_then(|s| s.cidrs.clone())
                .unwrap_or_default();
            for (i, text) in cidrs.iter().enumerate() {
                if let Some(net) = self.cidr(&object, &format!("spec.cidrs[{i}]"), text) {
                    config.service_cidrs.push(net);
                }
            }
        }

        let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
        for svc in &objects.services {
            if let Some(s) = self.service(svc, &mut warnings) {
                services.insert((s.namespace.clone(), s.name.clone()), s);
            }
        }
        for slice in &objects.slices {
            self.slice(slice, &mut services, &mut warnings);
        }

        let cluster = Cluster {
            node,
            config,
            services: services.into_values().collect(),
            origin: Origin::Kubernetes,
        };
        if self.errors.is_empty() {
            return Ok((cluster, warnings)); // the caller validates
        }
        // Report conversion and validation problems together, not one round each.
        if let Err(Invalid(more)) = crate::validate::validate(&cluster) {
            self.errors.extend(more);
        }
        Err(Invalid(self.errors).into())
    }

    fn node(&mut self, node: &core::Node, name: &str) -> Node {
        let object = format!("Node {name}");
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .cloned();
        let mut internal = Vec::new();
        let mut external = Vec::new();
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default();
        for (i, a) in addresses.iter().enumerate() {
            let list = match a.type_.as_str() {
                "InternalIP" => &mut internal,
                "ExternalIP" => &mut external,
                _ => continue,
            };
            if let Some(ip) = self.ip(
                &object,
                &format!("status.addresses[{i}].address"),
                &a.address,
            ) {
                list.push(ip);
            }
        }
        internal.extend(external);
        let spec = node.spec.clone().unwrap_or_default();
        let cidr_texts = spec
            .pod_cidrs
            .clone()
            .filter(|v| !v.is_empty())
            .or_else(|| spec.pod_cidr.clone().map(|c| vec![c]))
            .unwrap_or_default();
        let pod_cidrs = cidr_texts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| self.cidr(&object, &format!("spec.podCIDRs[{i}]"), c))
            .collect();
        Node {
            name: name.to_string(),
            zone,
            addresses: internal,
            pod_cidrs,
        }
    }

    fn config(&mut self, c: &KubeProxyConfiguration) -> ProxyConfig {
        let object = "KubeProxyConfiguration";
        let mut config = ProxyConfig::default();
        if let Some(cidrs) = &c.cluster_cidr {
            for text in cidrs.split(',').filter(|s| !s.trim().is_empty()) {
                if let Some(net) = self.cidr(object, "clusterCIDR", text) {
                    config.cluster_cidrs.push(net);
                }
            }
        }
        for (i, entry) in c.node_port_addresses.iter().flatten().enumerate() {
            if entry == "primary" {
                config.node_port_addresses.push(NodePortAddresses::Primary);
            } else if let Some(net) = self.cidr(object, &format!("nodePortAddresses[{i}]"), entry) {
                config
                    .node_port_addresses
                    .push(NodePortAddresses::Cidr(net));
            }
        }
        if let Some(nft) = &c.nftables {
            if let Some(bit) = nft.masquerade_bit {
                config.masquerade_bit = bit;
            }
            config.masquerade_all = nft.masquerade_all.unwrap_or(false);
        }
        let detect = c.detect_local.as_ref();
        config.detect_local = match c.detect_local_mode.as_deref().unwrap_or("") {
            "" | "ClusterCIDR" => DetectLocal::ClusterCidr,
            "NodeCIDR" => DetectLocal::NodeCidr,
            "InterfaceNamePrefix" => DetectLocal::InterfaceNamePrefix(
                detect
                    .and_then(|d| d.interface_name_prefix.clone())
                    .unwrap_or_default(),
            ),
            "BridgeInterface" => DetectLocal::BridgeInterface(
                detect
                    .and_then(|d| d.bridge_interface.clone())
                    .unwrap_or_default(),
            ),
            other => {
                self.err(
                    object,
                    "detectLocalMode",
                    format!("{other:?} is not one of ClusterCIDR, NodeCIDR, InterfaceNamePrefix, BridgeInterface"),
                );
                DetectLocal::ClusterCidr
            }
        };
        config
    }

    fn service(&mut self, svc: &core::Service, warnings: &mut Vec<String>) -> Option<Service> {
        let namespace = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let object = format!("Service {namespace}/{name}");
        let spec = svc.spec.clone().unwrap_or_default();
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            return None; // DNS only: kube-proxy programs nothing
        }
        let cluster_ip_texts = spec
            .cluster_ips
            .clone()
            .filter(|v| !v.is_empty())
            .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
            .unwrap_or_default();
        if cluster_ip_texts.first().is_some_and(|c| c == "None") {
            return None; // headless
        }
        if cluster_ip_texts.is_empty() || cluster_ip_texts[0].is_empty() {
            warnings.push(format!("{object}: skipped, it has no cluster IP yet"));
            return None;
        }
        let cluster_ips = cluster_ip_texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| self.ip(&object, &format!("spec.clusterIPs[{i}]"), t))
            .collect();
        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, t)| self.ip(&object, &format!("spec.externalIPs[{i}]"), t))
            .collect();
        let mut load_balancer_ips = Vec::new();
        if kind == "LoadBalancer" {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default();
            for (i, ing) in ingress.iter().enumerate() {
                // ipMode Proxy: the load balancer terminates traffic itself; kube-proxy skips it.
                if ing.ip_mode.as_deref() == Some("Proxy") {
                    continue;
                }
                if let Some(text) = &ing.ip {
                    if let Some(ip) = self.ip(
                        &object,
                        &format!("status.loadBalancer.ingress[{i}].ip"),
                        text,
                    ) {
                        load_balancer_ips.push(ip);
                    }
                }
            }
        }
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let protocol = self.protocol(
                &object,
                &format!("spec.ports[{i}].protocol"),
                p.protocol.as_deref(),
            );
            ports.push(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol,
                port: p.port,
                node_port: if matches!(kind, "NodePort" | "LoadBalancer") {
                    p.node_port
                } else {
                    None
                },
            });
        }
        let policy = |p: Option<&str>| match p {
            Some("Local") => TrafficPolicy::Local,
            _ => TrafficPolicy::Cluster,
        };
        let session_affinity_timeout =
            (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
            });
        let mut range_texts: Vec<(String, String)> = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| (format!("spec.loadBalancerSourceRanges[{i}]"), r.clone()))
            .collect();
        if range_texts.is_empty() {
            if let Some(annotation) = annotation(&svc.metadata, SOURCE_RANGES_ANNOTATION) {
                let field = format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]");
                range_texts = annotation
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|r| (field.clone(), r.to_string()))
                    .collect();
            }
        }
        let load_balancer_source_ranges = range_texts
            .iter()
            .filter_map(|(field, text)| self.cidr(&object, field, text))
            .collect();
        let load_balancing =
            match annotation(&svc.metadata, LOAD_BALANCING_ANNOTATION).map(str::trim) {
                None | Some("random") => LoadBalancing::Random,
                Some("round-robin") => LoadBalancing::RoundRobin,
                Some("maglev") => LoadBalancing::Maglev,
                Some(other) => {
                    self.err(
                        &object,
                        format!("metadata.annotations[{LOAD_BALANCING_ANNOTATION}]"),
                        format!("{other:?} is not one of random, round-robin, maglev"),
                    );
                    LoadBalancing::Random
                }
            };
        let maglev_field = format!("metadata.annotations[{MAGLEV_TABLE_SIZE_ANNOTATION}]");
        let maglev_table_size = match annotation(&svc.metadata, MAGLEV_TABLE_SIZE_ANNOTATION) {
            None => DEFAULT_MAGLEV_TABLE_SIZE,
            Some(text) => text.trim().parse().unwrap_or_else(|_| {
                self.err(&object, &maglev_field, format!("{text:?} is not a number"));
                DEFAULT_MAGLEV_TABLE_SIZE
            }),
        };
        Some(Service {
            namespace,
            name,
            cluster_ips,
            external_ips,
            load_balancer_ips,
            ports,
            external_traffic_policy: policy(spec.external_traffic_policy.as_deref()),
            internal_traffic_policy: policy(spec.internal_traffic_policy.as_deref()),
            session_affinity_timeout,
            load_balancer_source_ranges,
            load_balancing,
            maglev_table_size,
            endpoints: Vec::new(),
            endpoint_origins: Vec::new(),
        })
    }

    fn protocol(&mut self, object: &str, field: &str, text: Option<&str>) -> Protocol {
        match text.unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                self.err(
                    object,
                    field,
                    format!("{other:?} is not one of TCP, UDP, SCTP"),
                );
                Protocol::Tcp
            }
        }
    }

    fn slice(
        &mut self,
        slice: &discovery::EndpointSlice,
        services: &mut BTreeMap<(String, String), Service>,
        warnings: &mut Vec<String>,
    ) {
        let namespace = slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = slice.metadata.name.clone().unwrap_or_default();
        let object = format!("EndpointSlice {namespace}/{name}");
        let Some(service_name) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            warnings.push(format!(
                "{object}: skipped, it has no {SERVICE_NAME_LABEL} label"
            ));
            return;
        };
        let family = match slice.address_type.as_str() {
            "IPv4" => Family::Ipv4,
            "IPv6" => Family::Ipv6,
            "FQDN" => return, // kube-proxy ignores FQDN slices
            other => {
                self.err(
                    &object,
                    "addressType",
                    format!("{other:?} is not one of IPv4, IPv6, FQDN"),
                );
                return;
            }
        };
        let Some(svc) = services.get_mut(&(namespace.clone(), service_name.clone())) else {
            warnings.push(format!(
                "{object}: skipped, Service {namespace}/{service_name} is not in the input"
            ));
            return;
        };
        if !svc.cluster_ips.iter().any(|ip| Family::of(ip) == family) {
            let has: Vec<String> = svc
                .cluster_ips
                .iter()
                .map(|ip| Family::of(ip).to_string())
                .collect();
            self.err(
                &object,
                "addressType",
                format!(
                    "is {family} but Service {namespace}/{service_name} has only {} cluster IPs",
                    has.join(" and ")
                ),
            );
            return;
        }
        let mut ports = Vec::new();
        for (j, p) in slice.ports.iter().flatten().enumerate() {
            let Some(port) = p.port else { continue };
            let protocol = self.protocol(
                &object,
                &format!("ports[{j}].protocol"),
                p.protocol.as_deref(),
            );
            ports.push(EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                protocol,
                port,
            });
        }
        let mut weights = self.weights(&object, &slice.metadata);
        for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
            let Some(text) = ep.addresses.first() else {
                continue;
            };
            let field = format!("endpoints[{i}].addresses[0]");
            let Some(address) = self.ip(&object, &field, text) else {
                continue;
            };
            if Family::of(&address) != family {
                self.err(
                    &object,
                    field,
                    format!("{address} is not an {family} address, as addressType says"),
                );
                continue;
            }
            let cond = ep.conditions.clone().unwrap_or_default();
            let ready = cond.ready.unwrap_or(true);
            let hints = ep.hints.as_ref().map(|h| Hints {
                for_zones: h
                    .for_zones
                    .iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect(),
                for_nodes: h
                    .for_nodes
                    .iter()
                    .flatten()
                    .map(|n| n.name.clone())
                    .collect(),
            });
            svc.endpoints.push(Endpoint {
                address,
                node_name: ep.node_name.clone(),
                ready,
                serving: cond.serving.unwrap_or(ready),
                terminating: cond.terminating.unwrap_or(false),
                hints,
                weight: weights.remove(&address).unwrap_or(1),
                ports: ports.clone(),
            });
            svc.endpoint_origins.push(EndpointOrigin {
                slice: name.clone(),
                index: i,
            });
        }
        for address in weights.keys() {
            self.err(
                &object,
                WEIGHTS_FIELD,
                format!("names {address}, which is not an endpoint of this slice"),
            );
        }
    }
}
