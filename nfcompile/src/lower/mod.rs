//! Lowering: validated IR → nftables model, one table per IP family.
//!
//! # The layout, and why
//!
//! In nf_tables every rule that references a set is resolved by a linear walk over the table's
//! sets, and a map pays for every rule bound to it (see `shared/notes/kernel-facts.md`). So the
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
//! elements and an eighth, see [`capacity`]): the kernel then uses its fixed-size hash, which loads faster
//! than the resizable one.
//!
//! # Slots, and why endpoint changes touch data only
//!
//! `numgen random mod N` takes N from the rule, so a layout with one chain per endpoint count
//! must re-point the frontend's dispatch element when N changes — and adding any `goto` element
//! makes the kernel re-validate the whole table on commit (every element of every verdict map:
//! ~30 ms at 50k services). Instead a list of N endpoints lives in a *capacity class*
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

pub mod endpoints;
pub mod maglev;

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
use endpoints::{Target, Targets};

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

/// Smallest slot capacity: lists of 1 to 8 endpoints share one selection chain, so a
/// deployment scaling within that range changes endpoint-map elements only.
pub const MIN_SLOT_CAPACITY: u32 = 8;
/// Random draws a selection chain makes before it falls back to slot 0. Each draw hits with
/// probability ≥ 1/2, so the fallback is taken at most 2⁻²⁰ of the time.
pub const SELECTION_DRAWS: usize = 20;

/// The capacity class of a list whose weights add up to `total` (its length when every
/// weight is 1): a power of two, at least [`MIN_SLOT_CAPACITY`]. Only crossing a class
/// re-points a dispatch element.
pub fn slot_capacity(total: usize) -> u32 {
    (total.next_power_of_two() as u32).max(MIN_SLOT_CAPACITY)
}

/// Slots of a list of endpoints with these weights, within its capacity: one copy of the list
/// gives endpoint `i` `weights[i]` consecutive slots, and copies repeat until at least half of
/// the capacity is filled — so a random draw over the capacity hits an endpoint with
/// probability ≥ 1/2, and each endpoint in proportion to its weight (equal weights: endpoint
/// `i` holds `i, i + n, i + 2n, …`). Slot 0 is always filled. Yields (slot, endpoint index).
pub fn slots(weights: &[u32]) -> impl Iterator<Item = (u32, usize)> + '_ {
    slots_of(weights.len(), |i| weights[i])
}

/// How many slots [`slots`] fills for lists whose weights add up to `total`.
fn slots_filled(total: usize) -> usize {
    if total == 0 {
        return 0;
    }
    let capacity = slot_capacity(total) as usize;
    (capacity / 2).div_ceil(total).max(1) * total
}

/// [`slots`] of `n` endpoints whose weights `weight` gives, without collecting them.
fn slots_of(n: usize, weight: impl Fn(usize) -> u32) -> impl Iterator<Item = (u32, usize)> {
    let total: usize = (0..n).map(|i| weight(i) as usize).sum();
    let one_copy: Vec<usize> = if (0..n).all(|i| weight(i) == 1) {
        Vec::new() // equal weights: slot s is endpoint s mod n
    } else {
        (0..n)
            .flat_map(|i| std::iter::repeat_n(i, weight(i) as usize))
            .collect()
    };
    (0..slots_filled(total)).map(move |slot| {
        let i = if one_copy.is_empty() {
            slot % n
        } else {
            one_copy[slot % total]
        };
        (slot as u32, i)
    })
}

fn total_weight(targets: &[Target]) -> usize {
    targets.iter().map(|t| t.weight as usize).sum()
}

/// Shards for an estimated element count: a power of two, so that the shard of a frontend
/// only moves when the cluster grows or shrinks past a threshold.
fn shard_count(estimate: usize) -> u8 {
    estimate
        .div_ceil(SHARD_ELEMENTS)
        .max(1)
        .next_power_of_two()
        .min(64) as u8
}

/// A service's shard: a stable hash (FNV-1a) of its namespace and name, independent of other
/// services. All frontends of a service share it, so an endpoint change touches one map.
fn shard_of(svc: &Service, count: u8) -> Shard {
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

/// Where node ports are accepted in this family.
enum NodePortDest {
    None,
    Addresses(Vec<IpAddr>),
    /// Any local address but loopback (`nodePortAddresses` covering the whole family).
    AnyLocal,
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

    /// The (traffic, connections) counters of `port`, declared once; `None` without counting.
    fn port_counters(&mut self, svc: &Service, port: &ServicePort) -> Option<[String; 2]> {
        if !self.cluster.config.counters {
            return None;
        }
        let name = counters::ServicePortName::of(svc, port);
        let names = [
            name.counter(counters::CounterKind::Traffic),
            name.counter(counters::CounterKind::Connections),
        ];
        self.counters.extend(names.iter().cloned());
        Some(names)
    }

    /// Point `key` (of a frontend addressed as `keyed`) at its port's counters.
    fn count(&mut self, keyed: Keyed, key: &[Value], names: Option<&[String; 2]>) {
        let Some([traffic_name, connections_name]) = names else {
            return;
        };
        let (traffic, connections) = match keyed {
            Keyed::Addr => &mut self.counted.addr,
            Keyed::NodePort => &mut self.counted.node_port,
        };
        for (list, name) in [(traffic, traffic_name), (connections, connections_name)] {
            let data = Some(ElementData::Counter(name.clone()));
            list.push(element(key.to_vec(), data, None));
        }
    }

    fn run(mut self, services: &[&Service]) -> Table {
        for svc in services {
            self.service(svc);
        }
        self.finish()
    }

    fn service(&mut self, svc: &Service) {
        let family = self.family;
        let Some(&cluster_ip) = svc.cluster_ips.iter().find(|ip| Family::of(ip) == family) else {
            return;
        };
        self.cluster_ips.insert(cluster_ip);
        let mut external_ips: Vec<IpAddr> = svc
            .external_ips
            .iter()
            .chain(&svc.load_balancer_ips)
            .filter(|ip| Family::of(ip) == family)
            .copied()
            .collect();
        external_ips.sort();
        external_ips.dedup();
        let ranges: Vec<IpNetwork> = svc
            .load_balancer_source_ranges
            .iter()
            .filter(|r| Family::of_net(r) == family)
            .copied()
            .collect();

        for port in &svc.ports {
            let proto = port.protocol;
            let service_port = port.port as u16;
            let targets = endpoints::choose(svc, port, family, &self.cluster.node);
            let comment_as = |role: Role| {
                FrontendComment {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                    port: port.name.clone(),
                    role,
                }
                .to_string()
            };
            let comment = comment_as(Role::ClusterIp);
            self.protocols.insert(proto);
            self.hairpin.extend(
                targets
                    .cluster
                    .iter()
                    .chain(&targets.local)
                    .filter(|t| t.local)
                    .map(|t| t.addr),
            );

            // Cluster IP: internal traffic policy. Without any endpoint the client is rejected;
            // with endpoints but none here, `Local` drops (at the end of the local selection).
            let internal = non_empty(&targets.cluster, false, svc).map(|cluster| {
                match svc.internal_traffic_policy {
                    TrafficPolicy::Local => Route::Select(list(&targets.local, true, svc)),
                    TrafficPolicy::Cluster => Route::Select(cluster),
                }
            });
            let masq = if self.cluster.config.masquerade_all {
                Masq::Always
            } else if self.from_pod.is_some() {
                Masq::OffCluster
            } else {
                Masq::No
            };
            let counter_names = self.port_counters(svc, port);
            let key = addr_key(cluster_ip, proto, service_port);
            self.count(Keyed::Addr, &key, counter_names.as_ref());
            let verdict = self.frontend(svc, &targets, Role::ClusterIp, masq, internal, &key);
            self.service_ips.push(element(
                key,
                Some(ElementData::Verdict(verdict)),
                Some(&comment),
            ));

            // External IPs and load-balancer IPs: external traffic policy.
            let external_route = self.external_route(svc, &targets);
            for &ip in &external_ips {
                let key = addr_key(ip, proto, service_port);
                self.count(Keyed::Addr, &key, counter_names.as_ref());
                let verdict = self.frontend(
                    svc,
                    &targets,
                    Role::External,
                    Masq::Always,
                    external_route,
                    &key,
                );
                self.service_ips.push(element(
                    key.clone(),
                    Some(ElementData::Verdict(verdict)),
                    Some(&comment_as(Role::External)),
                ));
                if !ranges.is_empty() && svc.load_balancer_ips.contains(&ip) {
                    self.firewall(&key, &ranges, &svc.load_balancer_ips);
                }
            }

            // Node port.
            if let (Some(node_port), false) = (
                port.node_port,
                matches!(self.node_port_dest, NodePortDest::None),
            ) {
                let key = vec![Value::Proto(proto), Value::Port(node_port as u16)];
                self.count(Keyed::NodePort, &key, counter_names.as_ref());
                let verdict = self.frontend(
                    svc,
                    &targets,
                    Role::NodePort,
                    Masq::Always,
                    external_route,
                    &key,
                );
                self.service_nodeports.push(element(
                    key,
                    Some(ElementData::Verdict(verdict)),
                    Some(&comment_as(Role::NodePort)),
                ));
            }
        }
    }

    fn external_route(&self, svc: &Service, targets: &Targets) -> Option<Route> {
        match svc.external_traffic_policy {
            TrafficPolicy::Cluster => non_empty(&targets.cluster, false, svc).map(Route::Select),
            TrafficPolicy::Local => {
                let cluster = non_empty(&targets.cluster, false, svc)?;
                let local = list(&targets.local, true, svc);
                Some(Route::LocalPolicy { cluster, local })
            }
        }
    }

    /// Emit what one frontend needs and return the verdict its dispatch element carries.
    fn frontend(
        &mut self,
        svc: &Service,
        targets: &Targets,
        role: Role,
        masq: Masq,
        route: Option<Route>,
        key: &[Value],
    ) -> Verdict {
        let Some(route) = route else {
            return if targets.any {
                Verdict::Drop // a Local policy without a local endpoint
            } else {
                Verdict::Goto(names::REJECT_CHAIN.to_string())
            };
        };
        let masq = match route {
            Route::LocalPolicy { .. } => Masq::No, // sources are preserved; see the chain
            Route::Select(_) => masq,
        };
        // Affinity applies even to a single endpoint, so that scaling from one endpoint to two
        // changes elements only, not the frontend's chain.
        let affinity = svc.session_affinity_timeout.is_some();
        let keyed = if role == Role::NodePort {
            Keyed::NodePort
        } else {
            Keyed::Addr
        };
        let shards = match keyed {
            Keyed::Addr => &mut self.endpoints,
            Keyed::NodePort => &mut self.nodeport_endpoints,
        };
        let shard = shard_of(svc, shards.len() as u8);
        let map = &mut shards[shard.index as usize];
        let behaviour = Behaviour {
            role,
            masq,
            affinity,
            route,
            shard,
        };
        let lists = match route {
            Route::Select(l) => vec![l],
            Route::LocalPolicy { cluster, local } => vec![cluster, local],
        };
        for l in lists {
            let (offset, list) = if l.local {
                (LOCAL_SLOT_OFFSET, &targets.local)
            } else {
                (0, &targets.cluster)
            };
            let mut add = |slot: u32, i: usize| {
                let mut k = key.to_vec();
                k.push(Value::Integer(offset + slot));
                map.push(element(k, Some(target_data(&list[i])), None));
            };
            match l.selection {
                Selection::Maglev { size } => {
                    for (slot, i) in maglev::table(list, size).into_iter().enumerate() {
                        add(slot as u32, i);
                    }
                }
                Selection::Random { .. } | Selection::RoundRobin { .. } => {
                    for (slot, i) in slots_of(list.len(), |i| list[i].weight) {
                        add(slot, i);
                    }
                }
            }
        }
        if affinity {
            let timeout = svc.session_affinity_timeout.unwrap_or_default() as u32;
            self.affinity_timeouts.insert(timeout);
            let el = element(
                key.to_vec(),
                Some(ElementData::Verdict(Verdict::Goto(affinity_chain_name(
                    timeout,
                )))),
                None,
            );
            match keyed {
                Keyed::Addr => self.affinity_services.push(el),
                Keyed::NodePort => self.affinity_nodeports.push(el),
            }
        }
        let name = self.chain_names.entry(behaviour).or_insert_with(|| {
            let name = behaviour.chain_name();
            self.behaviours.insert(name.clone(), behaviour);
            name
        });
        Verdict::Goto(name.clone())
    }

    /// A load-balancer frontend with source ranges: the ranges are allowed, and — when a range
    /// holds the node's primary address of this family (kube-proxy's `allowFromNode`) — the
    /// service's own load-balancer IPs as sources too. A VIP is often a local address, so the
    /// node's own connection to it loops back with the VIP as its source. Nothing else of the
    /// node is added: a node address outside every range stays outside.
    fn firewall(&mut self, key: &[Value], ranges: &[IpNetwork], lb_ips: &[IpAddr]) {
        self.firewall_services
            .push(element(key.to_vec(), None, None));
        let mut allowed: Vec<IpNetwork> = ranges.to_vec();
        let family = self.family;
        let primary = self
            .cluster
            .node
            .addresses
            .iter()
            .find(|a| Family::of(a) == family && !a.is_loopback());
        if primary.is_some_and(|ip| ranges.iter().any(|r| r.contains(*ip))) {
            allowed.extend(
                lb_ips
                    .iter()
                    .filter(|ip| Family::of(ip) == family)
                    .map(|ip| IpNetwork::from(*ip)),
            );
        }
        let [addr, Value::Proto(proto), port] = key else {
            unreachable!("a load-balancer frontend's key is address . protocol . port")
        };
        let allow = self.firewall_allow.entry(*proto).or_default();
        for range in disjoint(allowed) {
            // One canonical form per key: a single host is an address, not a /32 range.
            let host = range.prefix() == if range.is_ipv4() { 32 } else { 128 };
            let source = if host {
                Value::Addr(range.ip())
            } else {
                Value::Prefix(range)
            };
            allow.push(element(vec![*addr, *port, source], None, None));
        }
    }

    fn behaviour_chain(&self, name: &str, b: &Behaviour) -> Chain {
        let mut rules = Vec::new();
        let mark = self.mark;
        match b.masq {
            Masq::No => {}
            Masq::Always => rules.push(rule(vec![], vec![Statement::MarkOr(mark)], None)),
            Masq::OffCluster => {
                let from_pod = self
                    .from_pod
                    .clone()
                    .expect("OffCluster needs a pod detector");
                rules.push(rule(
                    vec![negate(from_pod)],
                    vec![Statement::MarkOr(mark)],
                    Some("masquerade traffic from outside the cluster"),
                ));
            }
        }
        let from_node = Match::FibLocal {
            side: AddrSide::Source,
            negate: false,
        };
        if let Route::LocalPolicy { .. } = b.route {
            // Before the affinity lookup, whose DNAT ends the chain: the node's own later
            // connections are masqueraded like its first.
            rules.push(rule(
                vec![from_node.clone()],
                vec![Statement::MarkOr(mark)],
                Some("masquerade traffic from this node"),
            ));
        }
        let keyed = b.keyed();
        if b.affinity {
            rules.push(rule(
                vec![],
                vec![Statement::Verdict(Verdict::Jump(
                    names::AFFINITY_LOOKUP_CHAIN.to_string(),
                ))],
                Some("session affinity"),
            ));
        }
        let goto = |list: List| {
            Statement::Verdict(Verdict::Goto(
                SelectionChain::new(keyed, b.shard, list).to_string(),
            ))
        };
        match b.route {
            Route::Select(list) => rules.push(rule(vec![], vec![goto(list)], None)),
            Route::LocalPolicy { cluster, local } => {
                if let Some(from_pod) = &self.from_pod {
                    rules.push(rule(
                        vec![from_pod.clone()],
                        vec![goto(cluster)],
                        Some("pod traffic short-circuits to all endpoints"),
                    ));
                }
                rules.push(rule(
                    vec![from_node],
                    vec![goto(cluster)],
                    Some("the node itself reaches all endpoints"),
                ));
                rules.push(rule(vec![], vec![goto(local)], None));
            }
        }
        Chain {
            name: name.to_string(),
            base: None,
            comment: None,
            rules,
        }
    }

    fn selection_chains(&self) -> Vec<Chain> {
        let mut wanted = BTreeSet::new();
        for b in self.behaviours.values() {
            match b.route {
                Route::Select(l) => {
                    wanted.insert((b.keyed(), b.shard, l));
                }
                Route::LocalPolicy { cluster, local } => {
                    wanted.insert((b.keyed(), b.shard, cluster));
                    wanted.insert((b.keyed(), b.shard, local));
                }
            }
        }
        let f = self.family;
        wanted
            .into_iter()
            .map(|(keyed, shard, list)| {
                let offset = if list.local { LOCAL_SLOT_OFFSET } else { 0 };
                let map = endpoint_map_name(keyed, shard);
                let select = |slot: Expr| {
                    let mut key = match keyed {
                        Keyed::Addr => vec![Expr::Daddr(f), Expr::L4Proto, Expr::Dport],
                        Keyed::NodePort => vec![Expr::L4Proto, Expr::Dport],
                    };
                    key.push(slot);
                    Statement::DnatMap {
                        family: f,
                        key,
                        map: map.clone(),
                    }
                };
                let draw = |modulus: u32| select(Expr::NumgenRandom { modulus, offset });
                // Maglev and round robin select with one rule that never misses: every
                // entry of the table, every slot below the count, is filled.
                let one = |slot: Expr, comment: String| Chain {
                    name: SelectionChain::new(keyed, shard, list).to_string(),
                    base: None,
                    comment: None,
                    rules: vec![rule(vec![], vec![select(slot)], Some(&comment))],
                };
                let capacity = match list.selection {
                    Selection::Maglev { size: modulus } => {
                        let hash = Expr::JhashSaddr {
                            family: f,
                            modulus,
                            offset,
                        };
                        return one(
                            hash,
                            format!("Maglev: the client address picks one of {modulus} entries"),
                        );
                    }
                    Selection::RoundRobin { filled: modulus } => {
                        let counter = Expr::NumgenInc { modulus, offset };
                        return one(counter, format!("round robin over {modulus} slots"));
                    }
                    Selection::Random { capacity } => capacity,
                };
                // A draw over the whole capacity may land on an empty slot: the lookup misses
                // and the next rule draws again (rejection sampling, so every endpoint stays
                // equally likely). `mod 1` is slot 0, which every list fills.
                let mut rules: Vec<Rule> = (0..SELECTION_DRAWS)
                    .map(|_| rule(vec![], vec![draw(capacity)], None))
                    .collect();
                rules[0].comment = Some(format!(
                    "{SELECTION_DRAWS} draws over {capacity} slots; an empty slot misses and the next draws again"
                ));
                rules.push(rule(
                    vec![],
                    vec![draw(1)],
                    Some("every draw missed: first endpoint"),
                ));
                if list.local {
                    // Only an empty list gets here: traffic for a Local policy without a
                    // local endpoint is dropped, as kube-proxy does.
                    rules.push(rule(
                        vec![],
                        vec![Statement::Verdict(Verdict::Drop)],
                        Some("no local endpoints"),
                    ));
                }
                Chain {
                    name: SelectionChain::new(keyed, shard, list).to_string(),
                    base: None,
                    comment: None,
                    rules,
                }
            })
            .collect()
    }

    fn finish(self) -> Table {
        let f = self.family;
        let addr = FieldType::addr(f);
        let mut sets = Vec::new();
        let mut chains = Vec::new();
        let (base, jump) = (base_chain, jump_to);
        let addr_key_types = vec![addr, FieldType::InetProto, FieldType::InetService];
        let port_key_types = vec![FieldType::InetProto, FieldType::InetService];
        let endpoint_data = SetData::Fields(vec![addr, FieldType::InetService]);
        let has_affinity = !self.affinity_timeouts.is_empty();
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
        let affinity_chains = if has_affinity {
            self.affinity_chains()
        } else {
            Vec::new()
        };
        let counting = self.cluster.config.counters;
        let node_ports = !matches!(self.node_port_dest, NodePortDest::None);
        let counting_chains = if counting {
            self.counting_chains(node_ports)
        } else {
            Vec::new()
        };

        // nat hooks
        chains.push(base(
            "nat-prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            -100,
            vec![jump(names::SERVICES_CHAIN)],
        ));
        chains.push(base(
            "nat-output",
            ChainType::Nat,
            Hook::Output,
            -100,
            vec![jump(names::SERVICES_CHAIN)],
        ));
        let mut post = Vec::new();
        if has_affinity {
            post.push(jump(names::AFFINITY_UPDATE_CHAIN));
            chains.push(base(
                "nat-input",
                ChainType::Nat,
                Hook::Input,
                100,
                vec![jump(names::AFFINITY_UPDATE_CHAIN)],
            ));
        }
        post.push(jump(names::MASQUERADING_CHAIN));
        chains.push(base(
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            100,
            post,
        ));

        // services: the dispatch
        let mut services = Vec::new();
        let dispatch_key = vec![Expr::Daddr(f), Expr::L4Proto, Expr::Dport];
        if !self.firewall_services.is_empty() {
            let allow_key = vec![Expr::Daddr(f), Expr::Dport, Expr::Saddr(f)];
            for (proto, allowed) in self.firewall_allow {
                let allow_name = names::firewall_allow(proto);
                services.push(rule(
                    vec![
                        Match::Cmp {
                            expr: Expr::L4Proto,
                            value: Value::Proto(proto),
                            negate: false,
                        },
                        Match::Lookup {
                            key: dispatch_key.clone(),
                            set: SetRef::Named(names::FIREWALL_SERVICES.into()),
                            negate: false,
                        },
                        Match::Lookup {
                            key: allow_key.clone(),
                            set: SetRef::Named(allow_name.clone()),
                            negate: true,
                        },
                    ],
                    vec![Statement::Verdict(Verdict::Drop)],
                    Some("source not in loadBalancerSourceRanges"),
                ));
                let mut allow = set(
                    &allow_name,
                    vec![addr, FieldType::InetService, addr],
                    None,
                    allowed,
                    "allowed sources per load-balancer frontend",
                );
                allow.flags = SetFlags::INTERVAL;
                sets.push(allow);
            }
            sets.push(set(
                names::FIREWALL_SERVICES,
                addr_key_types.clone(),
                None,
                self.firewall_services,
                "load-balancer frontends with source ranges",
            ));
        }
        if counting {
            services.push(rule(
                vec![],
                vec![Statement::CounterMap {
                    key: dispatch_key.clone(),
                    map: names::SERVICE_CONNECTIONS.into(),
                }],
                None,
            ));
        }
        services.push(rule(
            vec![],
            vec![Statement::VerdictMap {
                key: dispatch_key,
                map: names::SERVICE_IPS.into(),
            }],
            None,
        ));
        sets.push(set(
            names::SERVICE_IPS,
            addr_key_types.clone(),
            Some(SetData::Verdict),
            self.service_ips,
            "service frontends: cluster, external and load-balancer IPs",
        ));
        let np_match = match &self.node_port_dest {
            NodePortDest::None => None,
            NodePortDest::Addresses(ips) => {
                sets.push(set(
                    names::NODEPORT_IPS,
                    vec![addr],
                    None,
                    ips.iter()
                        .map(|ip| element(vec![Value::Addr(*ip)], None, None))
                        .collect(),
                    "addresses that accept node ports",
                ));
                Some(vec![Match::Lookup {
                    key: vec![Expr::Daddr(f)],
                    set: SetRef::Named(names::NODEPORT_IPS.into()),
                    negate: false,
                }])
            }
            NodePortDest::AnyLocal => Some(vec![
                Match::FibLocal {
                    side: AddrSide::Destination,
                    negate: false,
                },
                Match::Cmp {
                    expr: Expr::Daddr(f),
                    value: Value::Prefix(loopback(f)),
                    negate: true,
                },
            ]),
        };
        if let Some(matches) = np_match {
            if counting {
                services.push(rule(
                    matches.clone(),
                    vec![Statement::CounterMap {
                        key: vec![Expr::L4Proto, Expr::Dport],
                        map: names::NODEPORT_CONNECTIONS.into(),
                    }],
                    None,
                ));
            }
            services.push(rule(
                matches,
                vec![Statement::VerdictMap {
                    key: vec![Expr::L4Proto, Expr::Dport],
                    map: names::SERVICE_NODEPORTS.into(),
                }],
                None,
            ));
            sets.push(set(
                names::SERVICE_NODEPORTS,
                port_key_types.clone(),
                Some(SetData::Verdict),
                self.service_nodeports,
                "node ports",
            ));
        }
        if !self.cluster_ips.is_empty() {
            services.push(rule(
                vec![Match::Lookup {
                    key: vec![Expr::Daddr(f)],
                    set: SetRef::Named(names::CLUSTER_IPS.into()),
                    negate: false,
                }],
                vec![Statement::Verdict(Verdict::Goto(
                    names::REJECT_CHAIN.into(),
                ))],
                Some("not a port of this cluster IP"),
            ));
            sets.push(set(
                names::CLUSTER_IPS,
                vec![addr],
                None,
                self.cluster_ips
                    .iter()
                    .map(|ip| element(vec![Value::Addr(*ip)], None, None))
                    .collect(),
                "allocated cluster IPs",
            ));
        }
        let service_cidrs: Vec<IpNetwork> = self
            .cluster
            .config
            .service_cidrs
            .iter()
            .filter(|c| Family::of_net(c) == f)
            .copied()
            .collect();
        let service_cidrs = disjoint(service_cidrs);
        if !service_cidrs.is_empty() {
            services.push(rule(
                vec![Match::Lookup {
                    key: vec![Expr::Daddr(f)],
                    set: SetRef::Named(names::SERVICE_CIDRS.into()),
                    negate: false,
                }],
                vec![Statement::Verdict(Verdict::Drop)],
                Some("unallocated cluster IP"),
            ));
            let mut cidrs = set(
                names::SERVICE_CIDRS,
                vec![addr],
                None,
                service_cidrs
                    .iter()
                    .map(|c| element(vec![Value::Prefix(*c)], None, None))
                    .collect(),
                "service CIDRs",
            );
            cidrs.flags = SetFlags::INTERVAL;
            sets.push(cidrs);
        }
        chains.push(Chain {
            name: names::SERVICES_CHAIN.into(),
            base: None,
            comment: None,
            rules: services,
        });

        // masquerading
        let mut masq = Vec::new();
        if !self.hairpin.is_empty() {
            masq.push(rule(
                vec![
                    Match::CtStatusDnat,
                    Match::Lookup {
                        key: vec![Expr::Saddr(f), Expr::Daddr(f)],
                        set: SetRef::Named(names::HAIRPIN.into()),
                        negate: false,
                    },
                ],
                vec![Statement::MarkOr(self.mark)],
                Some("hairpin: a pod reaching itself through a service"),
            ));
            sets.push(set(
                names::HAIRPIN,
                vec![addr, addr],
                None,
                self.hairpin
                    .iter()
                    .map(|ip| element(vec![Value::Addr(*ip), Value::Addr(*ip)], None, None))
                    .collect(),
                "local endpoints, as source . destination",
            ));
        }
        masq.push(rule(
            vec![Match::MarkBitClear {
                mask: self.mark,
                negate: false,
            }],
            vec![Statement::Verdict(Verdict::Return)],
            None,
        ));
        masq.push(rule(vec![], vec![Statement::MarkXor(self.mark)], None));
        masq.push(rule(
            vec![],
            vec![Statement::Masquerade { fully_random: true }],
            None,
        ));
        chains.push(Chain {
            name: names::MASQUERADING_CHAIN.into(),
            base: None,
            comment: None,
            rules: masq,
        });

        // session affinity
        if has_affinity {
            chains.extend(affinity_chains);
            let mut aff = set(
                names::AFFINITY,
                vec![addr, addr, FieldType::InetProto, FieldType::InetService],
                Some(endpoint_data.clone()),
                Vec::new(),
                "client . frontend → the endpoint it was sent to",
            );
            aff.flags = SetFlags::DYNAMIC | SetFlags::TIMEOUT;
            // Every update sets its own timeout; a fixed default keeps the declaration (and so
            // incremental updates) independent of which services have affinity.
            aff.timeout = Some(crate::validate::MAX_AFFINITY_TIMEOUT as u32);
            aff.size = Some(AFFINITY_MAP_SIZE);
            sets.push(aff);
            if !self.affinity_services.is_empty() {
                sets.push(set(
                    names::AFFINITY_SERVICES,
                    addr_key_types.clone(),
                    Some(SetData::Verdict),
                    self.affinity_services,
                    "frontends with session affinity",
                ));
            }
            if !self.affinity_nodeports.is_empty() {
                sets.push(set(
                    names::AFFINITY_NODEPORTS,
                    port_key_types.clone(),
                    Some(SetData::Verdict),
                    self.affinity_nodeports,
                    "node ports with session affinity",
                ));
            }
        }

        // per-service-port counters
        let counter_names = if counting {
            chains.extend(counting_chains);
            let (addr_traffic, addr_connections) = self.counted.addr;
            let (np_traffic, np_connections) = self.counted.node_port;
            let mut maps = vec![
                (
                    names::SERVICE_TRAFFIC,
                    &addr_key_types,
                    addr_traffic,
                    "frontend → its port's traffic counter",
                ),
                (
                    names::SERVICE_CONNECTIONS,
                    &addr_key_types,
                    addr_connections,
                    "frontend → its port's new-connection counter",
                ),
            ];
            if node_ports {
                maps.push((
                    names::NODEPORT_TRAFFIC,
                    &port_key_types,
                    np_traffic,
                    "node port → its port's traffic counter",
                ));
                maps.push((
                    names::NODEPORT_CONNECTIONS,
                    &port_key_types,
                    np_connections,
                    "node port → its port's new-connection counter",
                ));
            }
            for (name, key, elements, comment) in maps {
                sets.push(set(
                    name,
                    key.clone(),
                    Some(SetData::Counter),
                    elements,
                    comment,
                ));
            }
            self.counters.into_iter().collect()
        } else {
            Vec::new()
        };

        // behaviour and selection chains
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

        let mut ep_key = addr_key_types;
        ep_key.push(FieldType::Slot);
        let count = self.endpoints.len() as u8;
        for (index, elements) in self.endpoints.into_iter().enumerate() {
            sets.push(set(
                &endpoint_map_name(
                    Keyed::Addr,
                    Shard {
                        index: index as u8,
                        count,
                    },
                ),
                ep_key.clone(),
                Some(endpoint_data.clone()),
                elements,
                "frontend . slot → endpoint",
            ));
        }
        if !matches!(self.node_port_dest, NodePortDest::None) {
            let mut np_key = port_key_types;
            np_key.push(FieldType::Slot);
            let count = self.nodeport_endpoints.len() as u8;
            for (index, elements) in self.nodeport_endpoints.into_iter().enumerate() {
                sets.push(set(
                    &endpoint_map_name(
                        Keyed::NodePort,
                        Shard {
                            index: index as u8,
                            count,
                        },
                    ),
                    np_key.clone(),
                    Some(endpoint_data.clone()),
                    elements,
                    "node port . slot → endpoint",
                ));
            }
        }

        Table {
            family: f,
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

    /// A connection's original destination was an address that takes node ports: a match
    /// when node ports are limited to listed addresses (`None` for any local address, which
    /// only `ct status dnat` can stand in for after DNAT).
    fn original_node_port_address(&self) -> Option<Match> {
        matches!(self.node_port_dest, NodePortDest::Addresses(_)).then(|| Match::Lookup {
            key: vec![Expr::CtOriginalDaddr(self.family)],
            set: SetRef::Named(names::NODEPORT_IPS.into()),
            negate: false,
        })
    }

    /// Count every packet of a connection to a frontend in its port's traffic counter, after
    /// DNAT (`dstnat + 10`), by the connection's original destination: replies carry it too.
    /// The protocol match is constant (all three), so the rules do not depend on services.
    fn counting_chains(&self, node_ports: bool) -> Vec<Chain> {
        let f = self.family;
        let transport = Match::Lookup {
            key: vec![Expr::L4Proto],
            set: SetRef::Anonymous(
                [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                    .map(Value::Proto)
                    .to_vec(),
            ),
            negate: false,
        };
        // `ct status dnat` first: most packets are not DNATed and stop there.
        let mut rules = vec![rule(
            vec![Match::CtStatusDnat, transport.clone()],
            vec![
                Statement::CounterMap {
                    key: vec![
                        Expr::CtOriginalDaddr(f),
                        Expr::L4Proto,
                        Expr::CtOriginalDport,
                    ],
                    map: names::SERVICE_TRAFFIC.into(),
                },
                Statement::Verdict(Verdict::Return),
            ],
            None,
        )];
        if node_ports {
            let mut matches = vec![Match::CtStatusDnat, transport];
            matches.extend(self.original_node_port_address());
            rules.push(rule(
                matches,
                vec![Statement::CounterMap {
                    key: vec![Expr::L4Proto, Expr::CtOriginalDport],
                    map: names::NODEPORT_TRAFFIC.into(),
                }],
                None,
            ));
        }
        let base = |name: &str, hook| {
            let jump = vec![jump_to(names::COUNT_TRAFFIC_CHAIN)];
            base_chain(name, ChainType::Filter, hook, -90, jump)
        };
        vec![
            base("counters-prerouting", Hook::Prerouting),
            base("counters-output", Hook::Output),
            Chain {
                name: names::COUNT_TRAFFIC_CHAIN.into(),
                base: None,
                comment: Some("packets and bytes per service port".into()),
                rules,
            },
        ]
    }

    /// Remember which endpoint a client was sent to, after DNAT has chosen it.
    fn affinity_chains(&self) -> Vec<Chain> {
        let f = self.family;
        let proto_is = |p: Protocol| Match::Cmp {
            expr: Expr::L4Proto,
            value: Value::Proto(p),
            negate: false,
        };
        let mut update = Vec::new();
        for &p in &self.protocols {
            if !self.affinity_services.is_empty() {
                update.push(rule(
                    vec![proto_is(p), Match::CtStatusDnat],
                    vec![Statement::VerdictMap {
                        key: vec![
                            Expr::CtOriginalDaddr(f),
                            Expr::L4Proto,
                            Expr::CtOriginalDport,
                        ],
                        map: names::AFFINITY_SERVICES.into(),
                    }],
                    None,
                ));
            }
            if !self.affinity_nodeports.is_empty() {
                let mut matches = vec![proto_is(p), Match::CtStatusDnat];
                matches.extend(self.original_node_port_address());
                update.push(rule(
                    matches,
                    vec![Statement::VerdictMap {
                        key: vec![Expr::L4Proto, Expr::CtOriginalDport],
                        map: names::AFFINITY_NODEPORTS.into(),
                    }],
                    None,
                ));
            }
        }
        // One lookup rule for every frontend with affinity: a DNAT from the map ends the
        // packet's evaluation; no entry returns to the behaviour chain, which selects.
        let lookup = Chain {
            name: names::AFFINITY_LOOKUP_CHAIN.into(),
            base: None,
            comment: None,
            rules: vec![rule(
                vec![],
                vec![Statement::DnatMap {
                    family: f,
                    key: vec![Expr::Saddr(f), Expr::Daddr(f), Expr::L4Proto, Expr::Dport],
                    map: names::AFFINITY.to_string(),
                }],
                None,
            )],
        };
        let mut chains = vec![
            lookup,
            Chain {
                name: names::AFFINITY_UPDATE_CHAIN.into(),
                base: None,
                comment: None,
                rules: update,
            },
        ];
        for &timeout in &self.affinity_timeouts {
            let rules = self
                .protocols
                .iter()
                .map(|&p| {
                    rule(
                        vec![proto_is(p)],
                        vec![Statement::UpdateMap {
                            set: names::AFFINITY.into(),
                            key: vec![
                                Expr::Saddr(f),
                                Expr::CtOriginalDaddr(f),
                                Expr::L4Proto,
                                Expr::CtOriginalDport,
                            ],
                            data: vec![Expr::Daddr(f), Expr::Dport],
                            timeout,
                        }],
                        None,
                    )
                })
                .collect();
            chains.push(Chain {
                name: affinity_chain_name(timeout),
                base: None,
                comment: None,
                rules,
            });
        }
        chains
    }
}

/// An upper bound of the endpoint elements of `keyed` frontends in `family`, from the input
/// alone (before endpoint choice), to pick the shard count.
fn estimate(cluster: &Cluster, family: Family, keyed: Keyed) -> usize {
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

/// `local` says which slots hold the list; round robin and Maglev need at least one endpoint
/// (an empty list keeps the random selection, which ends in `drop`).
fn list(targets: &[Target], local: bool, svc: &Service) -> List {
    let total = total_weight(targets);
    let selection = match svc.load_balancing {
        _ if total == 0 => Selection::Random {
            capacity: slot_capacity(0),
        },
        LoadBalancing::Random => Selection::Random {
            capacity: slot_capacity(total),
        },
        LoadBalancing::RoundRobin => Selection::RoundRobin {
            filled: slots_filled(total) as u32,
        },
        LoadBalancing::Maglev => Selection::Maglev {
            size: svc.maglev_table_size,
        },
    };
    List { local, selection }
}

fn non_empty(targets: &[Target], local: bool, svc: &Service) -> Option<List> {
    (!targets.is_empty()).then(|| list(targets, local, svc))
}

fn addr_key(ip: IpAddr, proto: Protocol, port: u16) -> Vec<Value> {
    vec![Value::Addr(ip), Value::Proto(proto), Value::Port(port)]
}

fn target_data(t: &Target) -> ElementData {
    ElementData::Values(vec![Value::Addr(t.addr), Value::Port(t.port)])
}

fn element(key: Vec<Value>, data: Option<ElementData>, comment: Option<&str>) -> Element {
    Element {
        key,
        data,
        comment: comment.map(str::to_string),
    }
}

fn base_chain(name: &str, kind: ChainType, hook: Hook, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
        }),
        comment: None,
        rules,
    }
}

fn jump_to(chain: &str) -> Rule {
    rule(
        vec![],
        vec![Statement::Verdict(Verdict::Jump(chain.to_string()))],
        None,
    )
}

fn rule(matches: Vec<Match>, statements: Vec<Statement>, comment: Option<&str>) -> Rule {
    Rule {
        matches,
        statements,
        comment: comment.map(str::to_string),
    }
}

fn set(
    name: &str,
    key: Vec<FieldType>,
    data: Option<SetData>,
    elements: Vec<Element>,
    comment: &str,
) -> Set {
    Set {
        name: name.to_string(),
        key,
        data,
        flags: SetFlags::empty(),
        timeout: None,
        size: None,
        comment: Some(comment.to_string()),
        elements,
    }
}

fn negate(m: Match) -> Match {
    match m {
        Match::Cmp {
            expr,
            value,
            negate,
        } => Match::Cmp {
            expr,
            value,
            negate: !negate,
        },
        Match::Lookup { key, set, negate } => Match::Lookup {
            key,
            set,
            negate: !negate,
        },
        Match::IifName {
            name,
            prefix,
            negate,
        } => Match::IifName {
            name,
            prefix,
            negate: !negate,
        },
        Match::FibLocal { side, negate } => Match::FibLocal {
            side,
            negate: !negate,
        },
        Match::MarkBitClear { mask, negate } => Match::MarkBitClear {
            mask,
            negate: !negate,
        },
        Match::CtStatusDnat => unreachable!("never negated"),
    }
}

/// The same addresses as `ranges`, without overlaps (interval sets refuse them). Two CIDRs are
/// either disjoint or one holds the other, so dropping the held ones is enough.
fn disjoint(mut ranges: Vec<IpNetwork>) -> Vec<IpNetwork> {
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

fn loopback(family: Family) -> IpNetwork {
    match family {
        Family::Ipv4 => "127.0.0.0/8".parse().expect("valid"),
        Family::Ipv6 => "::1/128".parse().expect("valid"),
    }
}

/// The match for "this packet comes from a pod", per `detectLocalMode`.
fn from_pod_match(cluster: &Cluster, family: Family) -> Option<Match> {
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

fn node_port_dest(cluster: &Cluster, family: Family) -> NodePortDest {
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

#[cfg(test)]
mod tests;
