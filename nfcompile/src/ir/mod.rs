//! The intermediate representation: what one node must do for its services.
//!
//! Both front ends (Kubernetes objects, native YAML/JSON) produce a [`Cluster`]; it is also the
//! schema of the native input format (serde, `camelCase` fields) and the type embedders build
//! with the [`builder`] API. Nothing here is trusted: [`crate::validate`] checks it before
//! lowering. Numbers are kept wide (`i32`, as Kubernetes has them) so that an out-of-range value
//! reaches the validator and gets an error naming its field, instead of a serde type error.

pub mod builder;

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// Default `nftables.masqueradeBit` of kube-proxy: bit 14, mark `0x4000`.
pub const DEFAULT_MASQUERADE_BIT: i32 = 14;
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

/// Everything the compiler needs for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// The node the rules are compiled for.
    pub node: Node,
    #[serde(default)]
    pub config: ProxyConfig,
    #[serde(default)]
    pub services: Vec<Service>,
    /// Which input this came from, so errors can use that input's field names.
    #[serde(skip)]
    pub origin: Origin,
}

/// Provenance of IR objects, like spans in a compiler: it never changes the output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// Native IR (YAML/JSON or the builder API): field paths as in this schema.
    #[default]
    Native,
    /// Kubernetes objects: field paths as in the API objects.
    Kubernetes,
}

/// Where a Kubernetes endpoint came from (`EndpointSlice` name and index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointOrigin {
    pub slice: String,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// `topology.kubernetes.io/zone`; topology hints are ignored without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The node's own addresses, primary (InternalIP) first per family.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// `spec.podCIDRs`, used by `detectLocalMode: NodeCIDR`.
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<IpNetwork>,
}

/// The node-wide settings of kube-proxy that change the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Pod address ranges; traffic from elsewhere to a cluster IP is masqueraded.
    #[serde(default, rename = "clusterCIDRs")]
    pub cluster_cidrs: Vec<IpNetwork>,
    /// Ranges cluster IPs are allocated from (`ServiceCIDR`); unallocated addresses are dropped.
    #[serde(default, rename = "serviceCIDRs")]
    pub service_cidrs: Vec<IpNetwork>,
    /// The one bit of the packet mark this compiler owns (0-31).
    #[serde(default = "default_mark_bit")]
    pub masquerade_bit: i32,
    /// Masquerade all traffic to services, not only off-cluster traffic.
    #[serde(default)]
    pub masquerade_all: bool,
    /// Where NodePorts are accepted. Empty means the node's primary addresses.
    #[serde(default)]
    pub node_port_addresses: Vec<NodePortAddresses>,
    #[serde(default)]
    pub detect_local: DetectLocal,
    /// Count packets, bytes and new connections per service port in named counters
    /// (`nfcompile stats`). Costs two map elements per frontend and two counter objects per
    /// service port; off by default.
    #[serde(default)]
    pub counters: bool,
}

fn default_mark_bit() -> i32 {
    DEFAULT_MASQUERADE_BIT
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            cluster_cidrs: Vec::new(),
            service_cidrs: Vec::new(),
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            masquerade_all: false,
            node_port_addresses: Vec::new(),
            detect_local: DetectLocal::default(),
            counters: false,
        }
    }
}

/// An entry of `nodePortAddresses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodePortAddresses {
    /// The node's primary address of each family.
    Primary,
    /// Every node address inside this range.
    #[serde(untagged)]
    Cidr(IpNetwork),
}

/// How a packet is recognised as coming from a pod (kube-proxy's `detectLocalMode`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "mode", content = "value")]
pub enum DetectLocal {
    /// Source inside `clusterCIDRs` (kube-proxy's default).
    #[default]
    ClusterCidr,
    /// Source inside this node's `podCIDRs`.
    NodeCidr,
    /// Arriving on an interface whose name starts with this prefix.
    InterfaceNamePrefix(String),
    /// Arriving on this bridge.
    BridgeInterface(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// One per IP family the service has (dual-stack services have two).
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default, rename = "externalIPs", skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    #[serde(
        default,
        rename = "loadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "TrafficPolicy::is_cluster")]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default, skip_serializing_if = "TrafficPolicy::is_cluster")]
    pub internal_traffic_policy: TrafficPolicy,
    /// `ClientIP` session affinity timeout in seconds; `None` means no affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<IpNetwork>,
    /// How new connections pick an endpoint (`nfcompile.io/load-balancing` on the Service).
    #[serde(default, skip_serializing_if = "LoadBalancing::is_random")]
    pub load_balancing: LoadBalancing,
    /// Entries of the Maglev table (a prime); each is one map element per frontend, so a
    /// larger table spreads clients more evenly and moves fewer of them, at that cost.
    #[serde(
        default = "default_maglev_table_size",
        skip_serializing_if = "is_default_maglev_table_size"
    )]
    pub maglev_table_size: u32,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// One entry per endpoint when the service came from Kubernetes objects.
    #[serde(skip)]
    pub endpoint_origins: Vec<EndpointOrigin>,
}

impl Service {
    /// `namespace/name`, as errors and comments name a service.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// May be empty only when the service has a single port.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub address: IpAddr,
    /// The node the endpoint runs on; decides what is "local".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default = "yes")]
    pub ready: bool,
    #[serde(default = "yes")]
    pub serving: bool,
    #[serde(default)]
    pub terminating: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hints: Option<Hints>,
    /// Share of new connections relative to the service's other endpoints (1–256; 1:3 sends
    /// a quarter to the first). From the `nfcompile.io/weights` EndpointSlice annotation.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
    /// Target ports, matched to service ports by name and protocol.
    pub ports: Vec<EndpointPort>,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn is_one(w: &u32) -> bool {
    *w == 1
}

/// The largest endpoint weight: a list's weights fill at most `MAX_ENDPOINTS` slots.
pub const MAX_WEIGHT: u32 = 256;

/// Topology hints set by the EndpointSlice controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hints {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub for_zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub for_nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub port: i32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name nft uses (`tcp`), also the IANA protocol number below.
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// How a service's new connections choose among its endpoints.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancing {
    /// A random endpoint (weighted), kube-proxy's behaviour.
    #[default]
    Random,
    /// Endpoints in turn (`numgen inc`). The counter belongs to the rule, which every
    /// round-robin list of the same size shares: one busy service sees strict turns, several
    /// at once each see an even share.
    RoundRobin,
    /// Consistent hashing of the client address (Maglev): a client keeps its endpoint, and
    /// removing one of N endpoints moves only about 1/N of the clients.
    Maglev,
}

/// Entries of a Maglev lookup table unless `maglevTableSize` says otherwise: a prime well
/// above the endpoint count (the paper suggests ≥ 100 × N for ≤ 1% imbalance).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 251;

fn default_maglev_table_size() -> u32 {
    DEFAULT_MAGLEV_TABLE_SIZE
}

fn is_default_maglev_table_size(n: &u32) -> bool {
    *n == DEFAULT_MAGLEV_TABLE_SIZE
}

impl LoadBalancing {
    pub fn is_random(&self) -> bool {
        *self == LoadBalancing::Random
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

impl TrafficPolicy {
    pub fn is_cluster(&self) -> bool {
        *self == TrafficPolicy::Cluster
    }
}

/// IP family of an address or table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub fn of_net(net: &IpNetwork) -> Family {
        match net {
            IpNetwork::V4(_) => Family::Ipv4,
            IpNetwork::V6(_) => Family::Ipv6,
        }
    }

    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}
