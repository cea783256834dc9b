//! State that packets create and that outlives an endpoint leaving its frontend.
//!
//! No transaction touches it, so after a commit that removes an endpoint the backend deletes
//! it itself:
//! - session-affinity entries (client . frontend → endpoint) would keep sending clients to the
//!   endpoint until they time out (hours) — as kube-proxy's per-endpoint affinity sets go with
//!   their endpoint chains;
//! - UDP conntrack entries keep a "connection" DNATed to the endpoint for as long as the client
//!   keeps sending (kube-proxy deletes them too: UDP has no end of connection).

use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::diff::{Op, Transaction};
use crate::ir::Protocol;
use crate::layout::{is_endpoint_map, names, LOCAL_SLOT_OFFSET};
use crate::model::{Element, ElementData, Family, Ruleset, Value};

/// The packet-made state a commit leaves pointing at endpoints that left their frontend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stale {
    /// Pairs whose frontend has session affinity: their affinity-map entries must go.
    pub affinity_entries: Vec<StaleEndpoint>,
    /// Pairs of UDP frontends: their conntrack entries must go.
    pub udp_flows: Vec<StaleEndpoint>,
}

impl Stale {
    /// Whether nothing needs deleting.
    pub fn is_empty(&self) -> bool {
        self.affinity_entries.is_empty() && self.udp_flows.is_empty()
    }

    /// Keep the UDP flows of endpoints that still serve their frontend (`serving`, as the
    /// services are now): an endpoint leaves the maps when it starts terminating while another
    /// is ready, but kube-proxy keeps UDP flows to every serving endpoint.
    pub fn keep_serving(&mut self, serving: &UdpServing) {
        self.udp_flows
            .retain(|s| !serving.serves(&s.frontend, &s.endpoint));
    }

    /// Add the UDP flows of endpoints that served a frontend in `before` and serve it no more
    /// in `after` (both built from the same services, before and after a change; a service
    /// gone from `after` loses every endpoint). These include endpoints that had left the maps
    /// already (terminating ones whose flows were kept), which no transaction mentions.
    pub fn add_lost_udp(&mut self, before: &UdpServing, after: &UdpServing) {
        let mut seen: FxHashSet<StaleEndpoint> = self.udp_flows.iter().cloned().collect();
        for (frontend, endpoints) in &before.serving {
            let now = after.serving.get(frontend);
            for endpoint in endpoints {
                if now.is_some_and(|n| n.contains(endpoint)) {
                    continue;
                }
                let Some(Value::Addr(addr)) = endpoint.first() else {
                    continue;
                };
                let lost = StaleEndpoint {
                    family: Family::of(addr),
                    frontend: frontend.clone(),
                    endpoint: endpoint.clone(),
                };
                if seen.insert(lost.clone()) {
                    self.udp_flows.push(lost);
                }
            }
        }
    }
}

/// Which UDP flows may stay: every serving endpoint (`address . port`) of each UDP frontend
/// of some services (`address . protocol . port`, and `protocol . port` for a node port on
/// the node-port addresses), whether the maps hold it or not. As kube-proxy's
/// `CleanStaleEntries`, a flow stays while its endpoint serves; unlike it, the endpoint's port
/// counts too (a changed target port moves the flow).
#[derive(Debug, Clone, Default)]
pub struct UdpServing {
    serving: FxHashMap<Vec<Value>, FxHashSet<Vec<Value>>>,
    node_port_addresses: FxHashSet<IpAddr>,
}

impl UdpServing {
    /// The UDP frontends of `services` and their serving endpoints; node ports are taken on
    /// `node_port_addresses`.
    pub fn new<'a>(
        services: impl IntoIterator<Item = &'a crate::ir::Service>,
        node_port_addresses: impl IntoIterator<Item = IpAddr>,
    ) -> UdpServing {
        let mut serving: FxHashMap<Vec<Value>, FxHashSet<Vec<Value>>> = FxHashMap::default();
        let udp = Value::Proto(Protocol::Udp);
        for svc in services {
            for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                // What the maps may hold: ready endpoints, and serving ones while terminating.
                let endpoints: FxHashSet<Vec<Value>> = svc
                    .endpoints
                    .iter()
                    .filter(|ep| ep.ready || ep.serving)
                    .filter_map(|ep| {
                        let to = crate::lower::endpoints::target_port(ep, port)?;
                        Some(vec![Value::Addr(ep.address), Value::Port(to)])
                    })
                    .collect();
                let addresses = svc
                    .cluster_ips
                    .iter()
                    .chain(&svc.external_ips)
                    .chain(&svc.load_balancer_ips);
                let mut frontends: Vec<Vec<Value>> = addresses
                    .map(|a| vec![Value::Addr(*a), udp, Value::Port(number)])
                    .collect();
                if let Some(np) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                    frontends.push(vec![udp, Value::Port(np)]);
                }
                for f in frontends {
                    serving
                        .entry(f)
                        .or_default()
                        .extend(endpoints.iter().cloned());
                }
            }
        }
        UdpServing {
            serving,
            node_port_addresses: node_port_addresses.into_iter().collect(),
        }
    }

    /// Every UDP frontend of `cluster`, node ports on the addresses that accept them.
    pub fn of_cluster(cluster: &crate::ir::Cluster) -> UdpServing {
        UdpServing::of_services(cluster, &cluster.services)
    }

    /// The UDP frontends of `services` (some of `cluster`'s, or new versions of them), node
    /// ports on the addresses of `cluster` that accept them.
    pub fn of_services<'a>(
        cluster: &crate::ir::Cluster,
        services: impl IntoIterator<Item = &'a crate::ir::Service>,
    ) -> UdpServing {
        UdpServing::new(services, crate::lower::node_port_addresses(cluster))
    }

    /// Whether there is no UDP frontend.
    pub fn is_empty(&self) -> bool {
        self.serving.is_empty()
    }

    /// The families of the frontends' endpoints (whose conntrack tables a sweep reads).
    pub fn families(&self) -> Vec<Family> {
        let mut out: Vec<Family> = self
            .serving
            .values()
            .flatten()
            .filter_map(|ep| match ep.first() {
                Some(Value::Addr(a)) => Some(Family::of(a)),
                _ => None,
            })
            .collect::<FxHashSet<Family>>()
            .into_iter()
            .collect();
        out.sort();
        out
    }

    /// Whether `endpoint` (`address . port`) serves `frontend`.
    pub fn serves(&self, frontend: &[Value], endpoint: &[Value]) -> bool {
        self.serving
            .get(frontend)
            .is_some_and(|eps| eps.contains(endpoint))
    }

    /// Whether a UDP flow to `dst:dport`, answered from `reply_src:reply_sport`, must go: its
    /// destination is one of these frontends, which has serving endpoints, and the answer
    /// does not come from one of them — DNATed to an endpoint that serves no more, or not
    /// DNATed at all (a flow that began before the frontend had rules, which would otherwise
    /// keep going nowhere; kube-proxy deletes those too). A frontend without serving
    /// endpoints rejects new flows; its old ones are left alone, as kube-proxy leaves them.
    pub fn stale(&self, dst: IpAddr, dport: u16, reply_src: IpAddr, reply_sport: u16) -> bool {
        let udp = Value::Proto(Protocol::Udp);
        let own = self
            .serving
            .get([Value::Addr(dst), udp, Value::Port(dport)].as_slice());
        let node_port = || {
            self.node_port_addresses
                .contains(&dst)
                .then(|| self.serving.get([udp, Value::Port(dport)].as_slice()))
                .flatten()
        };
        own.or_else(node_port).is_some_and(|eps| {
            !eps.is_empty()
                && !eps.contains([Value::Addr(reply_src), Value::Port(reply_sport)].as_slice())
        })
    }
}

/// One frontend that no longer has an endpoint, whose packet-made state must go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaleEndpoint {
    /// The table's family.
    pub family: Family,
    /// `address . protocol . port`, or `protocol . port` for a node port (any node address).
    pub frontend: Vec<Value>,
    /// `address . port`, as the affinity map's data holds it.
    pub endpoint: Vec<Value>,
}

impl StaleEndpoint {
    /// Whether `entry` of the affinity map (`client . address . protocol . port : endpoint`)
    /// is one of these.
    pub fn matches(&self, entry: &Element) -> bool {
        let Some(ElementData::Values(to)) = &entry.data else {
            return false;
        };
        let key = &entry.key;
        key.len() == 4
            && *to == self.endpoint
            && key[4 - self.frontend.len()..] == self.frontend[..]
    }
}

/// Stale (frontend, endpoint) pairs after `tx`, in one pass: endpoint-map elements it deletes
/// whose frontend holds that endpoint in no slot any more, for frontends that can have such
/// state (with affinity, or UDP). `slot` looks an element up in the state after the commit
/// (endpoint map, key); `has_affinity` says whether a frontend key has an affinity element
/// after the commit.
pub(crate) fn stale(
    tx: &Transaction,
    slot: impl Fn(Family, &str, &[Value]) -> Option<Vec<Value>>,
    has_affinity: impl Fn(Family, &[Value]) -> bool,
) -> Stale {
    // Frontends whose affinity element this transaction deletes had affinity too.
    let mut dropped: FxHashSet<(Family, &[Value])> = FxHashSet::default();
    for op in &tx.ops {
        if let Op::DeleteElements {
            table,
            set,
            elements,
        } = op
        {
            if set == names::AFFINITY_SERVICES || set == names::AFFINITY_NODEPORTS {
                dropped.extend(elements.iter().map(|e| (table.family, e.key.as_slice())));
            }
        }
    }
    let mut out = Stale::default();
    let mut seen: FxHashSet<StaleEndpoint> = FxHashSet::default();
    for op in &tx.ops {
        let Op::DeleteElements {
            table,
            set,
            elements,
        } = op
        else {
            continue;
        };
        if !is_endpoint_map(set) {
            continue;
        }
        let family = table.family;
        for e in elements {
            let (Some(ElementData::Values(endpoint)), Some((_, frontend))) =
                (&e.data, e.key.split_last())
            else {
                continue;
            };
            let affinity = has_affinity(family, frontend) || dropped.contains(&(family, frontend));
            let udp = frontend.contains(&Value::Proto(Protocol::Udp));
            if !affinity && !udp {
                continue;
            }
            // Slots are filled densely from each list's first slot.
            let still_there = [0, LOCAL_SLOT_OFFSET].into_iter().any(|base| {
                (base..)
                    .map_while(|s| {
                        let mut key = frontend.to_vec();
                        key.push(Value::Integer(s));
                        slot(family, set, &key)
                    })
                    .any(|to| to == *endpoint)
            });
            let pair = StaleEndpoint {
                family,
                frontend: frontend.to_vec(),
                endpoint: endpoint.clone(),
            };
            if !still_there && seen.insert(pair.clone()) {
                if udp {
                    out.udp_flows.push(pair.clone());
                }
                if affinity {
                    out.affinity_entries.push(pair);
                }
            }
        }
    }
    out
}

/// `stale` (the transaction's stale pairs) against a whole desired ruleset, for callers that diffed whole models.
pub fn stale_in(tx: &Transaction, desired: &Ruleset) -> Stale {
    let touched: FxHashSet<(Family, &str)> = tx
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteElements { table, set, .. } if is_endpoint_map(set) => {
                Some((table.family, set.as_str()))
            }
            _ => None,
        })
        .collect();
    if touched.is_empty() {
        return Stale::default();
    }
    type Index<'a> = FxHashMap<&'a [Value], &'a Vec<Value>>;
    let mut maps: FxHashMap<(Family, &str), Index> = FxHashMap::default();
    let mut affinity: FxHashSet<(Family, &[Value])> = FxHashSet::default();
    for t in &desired.tables {
        for s in &t.sets {
            if touched.contains(&(t.family, s.name.as_str())) {
                let index = s
                    .elements
                    .iter()
                    .filter_map(|e| match &e.data {
                        Some(ElementData::Values(v)) => Some((e.key.as_slice(), v)),
                        _ => None,
                    })
                    .collect();
                maps.insert((t.family, s.name.as_str()), index);
            } else if s.name == names::AFFINITY_SERVICES || s.name == names::AFFINITY_NODEPORTS {
                affinity.extend(s.elements.iter().map(|e| (t.family, e.key.as_slice())));
            }
        }
    }
    stale(
        tx,
        |f, set, key| {
            maps.get(&(f, set))
                .and_then(|m| m.get(key))
                .map(|v| (*v).clone())
        },
        |f, key| affinity.contains(&(f, key)),
    )
}

/// The frontends of one desired table and the endpoints each holds, to judge packet-made state
/// read back from the kernel (a sweep) rather than derived from one transaction: what a
/// clean-up that failed left behind is found again by the next whole sync.
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    /// Dispatch keys: `address . protocol . port` and `protocol . port` (node ports).
    frontends: FxHashSet<Vec<Value>>,
    /// Frontends with session affinity.
    affinity: FxHashSet<Vec<Value>>,
    /// Every endpoint (`address . port`) each frontend holds, in any slot of either list.
    endpoints: FxHashMap<Vec<Value>, FxHashSet<Vec<Value>>>,
    /// The node-port addresses, when they are a set (else any local address).
    nodeport_addresses: Option<FxHashSet<Value>>,
}

impl Holdings {
    /// What `table` (a desired table, as compiled) holds: its dispatch sets, affinity sets,
    /// node-port addresses and endpoint maps.
    pub fn of(table: &crate::model::Table) -> Holdings {
        let mut h = Holdings::default();
        for s in &table.sets {
            let keys = || s.elements.iter().map(|e| e.key.clone());
            match s.name.as_str() {
                names::SERVICE_IPS | names::SERVICE_NODEPORTS => h.frontends.extend(keys()),
                names::AFFINITY_SERVICES | names::AFFINITY_NODEPORTS => h.affinity.extend(keys()),
                names::NODEPORT_IPS => {
                    h.nodeport_addresses =
                        Some(s.elements.iter().flat_map(|e| e.key.clone()).collect())
                }
                name if is_endpoint_map(name) => {
                    for e in &s.elements {
                        if let (Some((_, frontend)), Some(ElementData::Values(to))) =
                            (e.key.split_last(), &e.data)
                        {
                            h.endpoints
                                .entry(frontend.to_vec())
                                .or_default()
                                .insert(to.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        h
    }

    /// The frontend a connection to `address . protocol . port` was dispatched by: the
    /// address's own, else a node port on a node-port address.
    fn frontend(&self, addr: Value, proto: Value, port: Value) -> Option<Vec<Value>> {
        let own = vec![addr, proto, port];
        if self.frontends.contains(&own) {
            return Some(own);
        }
        let node_port = vec![proto, port];
        let on_node = self
            .nodeport_addresses
            .as_ref()
            .is_none_or(|a| a.contains(&addr));
        (on_node && self.frontends.contains(&node_port)).then_some(node_port)
    }

    fn holds(&self, frontend: &[Value], endpoint: &[Value]) -> bool {
        self.endpoints
            .get(frontend)
            .is_some_and(|eps| eps.contains(endpoint))
    }

    /// Whether an affinity-map entry (`client . address . protocol . port : endpoint`) pins its
    /// client to an endpoint its frontend no longer holds, or to a frontend that is gone or has
    /// no affinity any more. Everything in the affinity map is ours, so such an entry can go.
    pub fn stale_affinity(&self, entry: &Element) -> bool {
        let (Some(ElementData::Values(to)), [_, addr, proto, port]) =
            (&entry.data, entry.key.as_slice())
        else {
            return false;
        };
        match self.frontend(*addr, *proto, *port) {
            Some(f) => !self.affinity.contains(&f) || !self.holds(&f, to),
            None => true,
        }
    }
}
