//! Lowering: validated IR → nftables model, one table per IP family.
//!
//! # The layout, and why
//!
//! In nf_tables every rule that references a set is resolved by a linear walk over the table's
//! sets, and a map pays for every rule bound to it (see `docs/kernel-facts.md`). So the
//! number of sets and maps here is fixed, each is referenced by a number of rules that does not
//! grow with services, and nothing is per service except map elements:
//!
//! ```text
//!  nat-prerouting / nat-output (dstnat)
//!    └─ jump services
//!         ├─ firewall: daddr.proto.dport @firewall-services, not in @firewall-allow-PROTO → drop
//!         ├─ daddr . l4proto . dport  vmap @service-ips ───────┐   (cluster/external/LB IPs)
//!         ├─ nodeport address: l4proto . dport vmap @service-nodeports ─┤
//!         ├─ daddr @cluster-ips → reject     (a port that is not a service port)
//!         └─ daddr @service-cidrs → drop     (an address no service holds)
//!                                                               ▼
//!   behaviour chains, shared by every frontend that behaves alike, e.g. `cluster-ip-masq-offcluster-8`:
//!         [off-cluster source → mark]  [affinity: dnat from @affinity]  goto endpoints-8
//!                                                               ▼
//!   selection chains, one per (key kind, list, slot capacity):
//!     endpoints-8:  20 × dnat to daddr . l4proto . dport . numgen random mod 8 map @endpoints
//!                   then slot 0 (… numgen random mod 1 …)
//!     local-endpoints-8: the same at offset 32768, then drop (no local endpoint)
//!     nodeport-endpoints-8: dnat to l4proto . dport . numgen random mod 8 map @nodeport-endpoints
//!
//!  nat-postrouting (srcnat) → [affinity-update] → masquerading:
//!         hairpin (pod reaching itself: saddr . daddr @hairpin) → mark
//!         mark bit clear → return; clear the bit; masquerade fully-random
//! ```
//!
//! Per packet this is a constant number of hash lookups. Per load it is one element per
//! frontend in a dispatch map plus about one per (frontend, endpoint) in an endpoint map;
//! chains number a few per slot capacity in use. Every set is declared with a size (its
//! elements and an eighth, see [`crate::layout::capacity`]): the kernel then uses its fixed-size hash, which loads faster
//! than the resizable one.
//!
//! # Slots, and why endpoint changes touch data only
//!
//! `numgen random mod N` takes N from the rule, so a layout with one chain per endpoint count
//! must re-point the frontend's dispatch element when N changes — and adding any `goto` element
//! makes the kernel re-validate the whole table on commit (every element of every verdict map;
//! `docs/kernel-facts.md`). Instead a list of N endpoints lives in a *capacity class*
//! C = max(8, next power of two ≥ N) ([`slot_capacity`]): endpoint i holds slots
//! i, i+N, i+2N, … filling at least half of C ([`slots`]), and the selection chain draws
//! `numgen random mod C` up to [`SELECTION_DRAWS`] times; a draw on an empty slot misses the
//! map and the next rule draws again. That is rejection sampling: every endpoint is equally
//! likely, each draw hits with probability ≥ ½, the slot-0 fallback after 20 misses is taken
//! less than once in a million. Scaling within a class (1–8, 9–16, …) and losing or gaining
//! the last local endpoint change endpoint-map elements only.
//!
//! Cluster-wide lists occupy slots `0..C` of the frontend's key, this node's endpoints (for
//! `Local` traffic policies) `32768..32768+C`. No endpoints at all: the dispatch element is
//! `goto reject-chain` (the client is refused at once); `Local` policies with no local
//! endpoint reach the end of the local selection chain, which drops.

// What each file builds: `dispatch` the frontends of each service port (and the source-range
// firewall), `behaviour` the behaviour chains frontends share, `selection` the selection
// chains and their lists, `affinity` session affinity, `counting` per-port counters, `node`
// the node's facts (node-port addresses, "from a pod"), `slots` and `shards` the slot and
// shard arithmetic, `build` small model constructors; `finish` below assembles the table.
mod affinity;
mod behaviour;
mod build;
mod counting;
mod dispatch;
pub mod endpoints;
mod hooks;
pub mod maglev;
mod masquerade;
mod node;
mod selection;
mod shards;
mod slots;

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::ir::{
    Cluster, DetectLocal, Family, LoadBalancing, NodePortAddresses, Protocol, Service, ServicePort,
    TrafficPolicy,
};
use crate::layout::counters;
use crate::model::*;
use crate::validate::Validated;
use build::*;
use endpoints::{Target, Targets};
use node::*;
use selection::*;
use shards::*;
use slots::*;

pub use node::node_port_addresses;
pub use slots::{slot_capacity, slots, MIN_SLOT_CAPACITY, SELECTION_DRAWS};

use crate::layout::{
    affinity_chain_name, endpoint_map_name, Behaviour, FrontendComment, Keyed, List, Masq, Role,
    Route, Selection, SelectionChain, Shard,
};
pub use crate::layout::{names, AFFINITY_MAP_SIZE, LOCAL_SLOT_OFFSET, SHARD_ELEMENTS, TABLE};

/// Lower a validated cluster into one table per IP family in use.
pub fn lower(validated: Validated<'_>) -> Ruleset {
    let cluster = validated.cluster();
    let mut services: Vec<&Service> = cluster.services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let tables = families_in_use(cluster)
        .into_iter()
        .map(|family| {
            let shards = (
                shard_count(estimate(cluster, family, Keyed::Addr)),
                shard_count(estimate(cluster, family, Keyed::NodePort)),
            );
            let mut table = FamilyLowering::new(cluster, family, shards).run(&services);
            crate::layout::capacity::size_sets(&mut table);
            table
        })
        .collect();
    Ruleset { tables }
}

/// One service alone, lowered for `family` as it appears inside a full lowering of `cluster`
/// whose endpoint maps have `shards` = (address, node-port) shards: its elements, the chains
/// it needs, and the fixed sets and chains. Incremental updates diff two of these instead of
/// two whole rulesets.
pub fn lower_service(cluster: &Cluster, svc: &Service, family: Family, shards: (u8, u8)) -> Table {
    FamilyLowering::new(cluster, family, shards).run(&[svc])
}

/// Families with a node address, a service or a configured range; IPv4 if there is none.
fn families_in_use(cluster: &Cluster) -> Vec<Family> {
    let mut families = BTreeSet::new();
    families.extend(cluster.node.addresses.iter().map(Family::of));
    for svc in &cluster.services {
        families.extend(svc.cluster_ips.iter().map(Family::of));
    }
    families.extend(cluster.config.cluster_cidrs.iter().map(Family::of_net));
    families.extend(cluster.config.service_cidrs.iter().map(Family::of_net));
    if families.is_empty() {
        families.insert(Family::Ipv4);
    }
    families.into_iter().collect()
}

struct FamilyLowering<'a> {
    cluster: &'a Cluster,
    family: Family,
    mark: u32,
    /// Matches a packet from a pod; `None` when this family has no way to tell.
    from_pod: Option<Match>,
    node_port_dest: NodePortDest,
    behaviours: BTreeMap<String, Behaviour>,
    /// Chain name of each behaviour seen, so a name is formatted once, not per frontend.
    chain_names: FxHashMap<Behaviour, String>,
    service_ips: Vec<Element>,
    service_nodeports: Vec<Element>,
    /// Endpoint elements per shard, for address and node-port keys.
    endpoints: Vec<Vec<Element>>,
    nodeport_endpoints: Vec<Vec<Element>>,
    cluster_ips: BTreeSet<IpAddr>,
    firewall_services: Vec<Element>,
    firewall_allow: BTreeMap<Protocol, Vec<Element>>,
    hairpin: BTreeSet<IpAddr>,
    affinity_services: Vec<Element>,
    affinity_nodeports: Vec<Element>,
    affinity_timeouts: BTreeSet<u32>,
    protocols: BTreeSet<Protocol>,
    /// Counter objects and counter-map elements ([`counters`]), when counting is on.
    counters: BTreeSet<String>,
    counted: Counted,
}

/// Counter-map elements: (traffic, connections) for address and node-port keys.
#[derive(Default)]
struct Counted {
    addr: (Vec<Element>, Vec<Element>),
    node_port: (Vec<Element>, Vec<Element>),
}

impl<'a> FamilyLowering<'a> {
    fn new(cluster: &'a Cluster, family: Family, shards: (u8, u8)) -> Self {
        FamilyLowering {
            cluster,
            family,
            mark: 1u32 << cluster.config.masquerade_bit,
            from_pod: from_pod_match(cluster, family),
            node_port_dest: node_port_dest(cluster, family),
            behaviours: BTreeMap::new(),
            chain_names: FxHashMap::default(),
            service_ips: Vec::new(),
            service_nodeports: Vec::new(),
            endpoints: vec![Vec::new(); shards.0 as usize],
            nodeport_endpoints: vec![Vec::new(); shards.1 as usize],
            cluster_ips: BTreeSet::new(),
            firewall_services: Vec::new(),
            firewall_allow: BTreeMap::new(),
            hairpin: BTreeSet::new(),
            affinity_services: Vec::new(),
            affinity_nodeports: Vec::new(),
            affinity_timeouts: BTreeSet::new(),
            protocols: BTreeSet::new(),
            counters: BTreeSet::new(),
            counted: Counted::default(),
        }
    }

    fn run(mut self, services: &[&Service]) -> Table {
        for svc in services {
            self.service(svc);
        }
        self.finish()
    }

    /// Assemble the table: hooks, dispatch, masquerading, affinity, counters, behaviour and
    /// selection chains, endpoint maps — in this order, which the goldens fix.
    fn finish(mut self) -> Table {
        let needs_reject = !self.cluster_ips.is_empty()
            || self.service_ips.iter().chain(&self.service_nodeports).any(|e| {
                matches!(&e.data, Some(ElementData::Verdict(Verdict::Goto(c))) if c == names::REJECT_CHAIN)
            });
        let behaviour_chains: Vec<Chain> = self
            .behaviours
            .iter()
            .map(|(name, b)| self.behaviour_chain(name, b))
            .collect();
        let selection_chains = self.selection_chains();
        let has_affinity = !self.affinity_timeouts.is_empty();
        let counting = self.cluster.config.counters;
        let node_ports = !matches!(self.node_port_dest, NodePortDest::None);

        let mut sets = Vec::new();
        let mut chains = self.hook_chains();
        chains.push(self.dispatch_chain(&mut sets));
        chains.push(self.masquerading_chain(&mut sets));
        if has_affinity {
            chains.extend(self.affinity_chains());
            self.affinity_sets(&mut sets);
        }
        let counter_names = if counting {
            chains.extend(self.counting_chains(node_ports));
            self.counter_maps(&mut sets)
        } else {
            Vec::new()
        };
        chains.extend(behaviour_chains);
        chains.extend(selection_chains);
        if needs_reject {
            chains.push(Chain {
                name: names::REJECT_CHAIN.into(),
                base: None,
                comment: None,
                rules: vec![rule(vec![], vec![Statement::Reject], None)],
            });
        }
        self.endpoint_maps(&mut sets);

        Table {
            family: self.family,
            name: TABLE.to_string(),
            comment: Some(format!(
                "service rules for node {}, generated by nfcompile; do not edit",
                self.cluster.node.name
            )),
            counters: counter_names,
            sets,
            chains,
        }
    }
}

#[cfg(test)]
mod tests;
