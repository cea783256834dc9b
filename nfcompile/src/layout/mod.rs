//! The layout's conventions, each written and read back here only: the table's name, the
//! fixed sets, maps and chains, how endpoint maps are sharded and named, how behaviour and
//! selection chains are named after what they do, the slots of a frontend's endpoint lists,
//! and the comments that say which service a dispatch element belongs to.
//!
//! `lower` builds the layout with these; the backends and passes that read a ruleset back
//! (`diff::describe`, `incremental`, the netlink clean-ups) parse them with the same types,
//! never with string prefixes of their own. Every format sits beside its parser, and a
//! round-trip test holds them together.

pub mod capacity;
mod chains;
mod comment;
pub mod counters;
mod maps;

pub use chains::{
    affinity_chain_name, is_affinity_chain, Behaviour, BehaviourName, Keyed, List, Masq, Role,
    Route, Selection, SelectionChain,
};
pub use comment::FrontendComment;
pub use maps::{endpoint_map_name, is_endpoint_map, shard_counts, EndpointMap, Shard};

/// The table every backend owns; nothing outside it is ever touched.
pub const TABLE: &str = "nfcompile";

/// First slot of the node-local endpoint list of a frontend: cluster-wide lists hold slots
/// `0..C`, this node's endpoints (for `Local` traffic policies) `32768..32768+C`.
pub const LOCAL_SLOT_OFFSET: u32 = crate::validate::MAX_ENDPOINTS as u32;

/// Capacity of the dynamic session-affinity map.
pub const AFFINITY_MAP_SIZE: u32 = 1 << 20;

/// Largest number of elements one endpoint map is meant to hold (see [`Shard`]).
pub const SHARD_ELEMENTS: usize = 32768;

/// Names of the fixed sets, maps and chains.
pub mod names {
    /// Dispatch verdict map of cluster, external and load-balancer IPs:
    /// `daddr . l4proto . dport : goto behaviour`.
    pub const SERVICE_IPS: &str = "service-ips";
    /// Dispatch verdict map of node ports: `l4proto . dport : goto behaviour`.
    pub const SERVICE_NODEPORTS: &str = "service-nodeports";
    /// Endpoint map of address-keyed frontends (sharded: see [`super::EndpointMap`]).
    pub const ENDPOINTS: &str = "endpoints";
    /// Endpoint map of node ports (sharded too).
    pub const NODEPORT_ENDPOINTS: &str = "nodeport-endpoints";
    /// Every cluster IP: a port that is no service port is rejected.
    pub const CLUSTER_IPS: &str = "cluster-ips";
    /// The service CIDRs: an address no service holds is dropped.
    pub const SERVICE_CIDRS: &str = "service-cidrs";
    /// The node's addresses that accept node ports.
    pub const NODEPORT_IPS: &str = "nodeport-ips";
    /// Frontends with `loadBalancerSourceRanges`.
    pub const FIREWALL_SERVICES: &str = "firewall-services";
    /// `firewall-allow-tcp` …: allowed sources (`daddr . dport . saddr`, an interval set) per
    /// protocol. The protocol is not in the key: an `inet_proto` inside an interval
    /// concatenation needs a byteorder instruction of length 1 and size 2, which Linux refuses
    /// since 6.12.115 ("nft_byteorder: remove multi-register support") and nft before 1.1.0
    /// still emits.
    pub fn firewall_allow(proto: crate::ir::Protocol) -> String {
        format!("firewall-allow-{}", proto.nft_name())
    }
    /// `saddr . daddr` of pods reaching themselves through a service.
    pub const HAIRPIN: &str = "hairpin";
    /// The dynamic map `client . frontend : endpoint` of session affinity.
    pub const AFFINITY: &str = "affinity";
    /// Address-keyed frontends with session affinity.
    pub const AFFINITY_SERVICES: &str = "affinity-services";
    /// Node ports with session affinity.
    pub const AFFINITY_NODEPORTS: &str = "affinity-nodeports";
    /// Counter map of address-keyed frontends' traffic.
    pub const SERVICE_TRAFFIC: &str = "service-traffic";
    /// Counter map of node ports' traffic.
    pub const NODEPORT_TRAFFIC: &str = "nodeport-traffic";
    /// Counter map of address-keyed frontends' new connections.
    pub const SERVICE_CONNECTIONS: &str = "service-connections";
    /// Counter map of node ports' new connections.
    pub const NODEPORT_CONNECTIONS: &str = "nodeport-connections";
    /// The chain that counts traffic after DNAT.
    pub const COUNT_TRAFFIC_CHAIN: &str = "count-traffic";
    /// The dispatch chain.
    pub const SERVICES_CHAIN: &str = "services";
    /// The chain that masquerades marked connections.
    pub const MASQUERADING_CHAIN: &str = "masquerading";
    /// Writes the affinity map after DNAT.
    pub const AFFINITY_UPDATE_CHAIN: &str = "affinity-update";
    /// Reads the affinity map before selection.
    pub const AFFINITY_LOOKUP_CHAIN: &str = "affinity-lookup";
    /// Rejects clients of a frontend without endpoints.
    pub const REJECT_CHAIN: &str = "reject-chain";
}
