//! State that packets create and that outlives an endpoint leaving its frontend.
//!
//! No transaction touches it, so after a commit that removes an endpoint the backend deletes
//! it itself:
//! - session-affinity entries (client . frontend → endpoint) would keep sending clients to the
//!   endpoint until they time out (hours) — as kube-proxy's per-endpoint affinity sets go with
//!   their endpoint chains;
//! - UDP conntrack entries keep a "connection" DNATed to the endpoint for as long as the client
//!   keeps sending (kube-proxy deletes them too: UDP has no end of connection).

use rustc_hash::{FxHashMap, FxHashSet};

use crate::diff::{Op, Transaction};
use crate::ir::Protocol;
use crate::lower::{names, LOCAL_SLOT_OFFSET};
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
    pub fn is_empty(&self) -> bool {
        self.affinity_entries.is_empty() && self.udp_flows.is_empty()
    }
}

/// One frontend that no longer has an endpoint, whose packet-made state must go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaleEndpoint {
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

fn is_endpoint_map(set: &str) -> bool {
    set.starts_with(names::ENDPOINTS) || set.starts_with(names::NODEPORT_ENDPOINTS)
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

/// [`stale`] against a whole desired ruleset, for callers that diffed whole models.
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
