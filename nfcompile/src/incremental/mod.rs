//! Incremental compilation: a change to a few services → a transaction, in time proportional
//! to the change, not to the cluster.
//!
//! A full compile and diff costs time in proportion to the cluster even when one endpoint
//! moved (the README's Performance section has the numbers). A proxy's sync loop knows which services changed (kube-proxy's change
//! tracker does), so [`Incremental`] lowers only those — each service alone, with
//! [`lower::lower_service`] — and diffs the old and new fragments by key against what the
//! kernel holds, which it keeps per set in hash maps.
//!
//! What it cannot do element by element it refuses with [`Refused`] (nothing changed), and
//! the caller compiles and diffs the whole cluster instead: a set or rule the cluster did
//! not need before (the first firewall, the first UDP service with affinity, a new family,
//! a node or configuration change), or an element another service holds (the full path
//! reports the conflict as a validation error).
//!
//! It adds and never deletes two kinds of things, like kube-proxy keeps stale chains for a
//! while: shared chains (behaviour and selection chains no service uses any more) and
//! hairpin addresses (an address may be local to several services). Both are harmless to
//! packets; [`Incremental::expected`] includes them, and a full sync removes them.

mod stale;

use std::collections::{BTreeMap, HashMap, HashSet};

use rustc_hash::FxHashMap;

use crate::diff::{add_new_chain, same_but_size, Op, TableRef, Transaction};
use crate::ir::{Cluster, Service};
use crate::layout::names;
use crate::lower;
use crate::model::{Chain, Element, Family, Rule, Ruleset, Table};

pub use stale::{stale_in, Holdings, Stale, StaleEndpoint, UdpServing};

/// One change reported by the caller's watch of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new service, or new contents for an existing one (matched by namespace and name).
    Upsert(Service),
    /// The service of this namespace and name is gone.
    Remove {
        /// The service's namespace.
        namespace: String,
        /// The service's name.
        name: String,
    },
}

impl Change {
    /// The namespace and name of the service it changes.
    pub fn name(&self) -> (&str, &str) {
        match self {
            Change::Upsert(s) => (&s.namespace, &s.name),
            Change::Remove { namespace, name } => (namespace, name),
        }
    }

    fn key(&self) -> (String, String) {
        match self {
            Change::Upsert(s) => (s.namespace.clone(), s.name.clone()),
            Change::Remove { namespace, name } => (namespace.clone(), name.clone()),
        }
    }
}

/// The last change to each service (the last one wins).
fn last_changes(changes: &[Change]) -> HashMap<(String, String), &Change> {
    changes.iter().map(|ch| (ch.key(), ch)).collect()
}

/// Why a change needs a full compile; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("needs a full sync: {0}")]
pub struct Refused(pub String);

/// What one table holds, kept so that a change can be diffed by key.
#[derive(Debug, Clone)]
struct TableState {
    /// Index of this table in [`Incremental::shells`].
    table: usize,
    elements: HashMap<String, FxHashMap<Vec<crate::model::Value>, Element>>,
    /// Chain name by body, so a service's chains resolve to the ones the kernel already has.
    by_body: HashMap<Vec<Rule>, String>,
    shards: (u8, u8),
    /// Counter objects the table holds (each service port's own).
    counters: HashSet<String>,
}

/// Sets whose elements come from the node and configuration, not from services.
fn node_level(set: &str) -> bool {
    set == names::NODEPORT_IPS || set == names::SERVICE_CIDRS || set == names::AFFINITY
}

/// Chains every service shares whatever it is (and the affinity chain of each timeout, whose
/// rules depend on the protocols in use); a service may only use rules they have.
fn fixed(chain: &Chain) -> bool {
    chain.base.is_some()
        || crate::layout::is_affinity_chain(&chain.name).is_some()
        || [
            names::SERVICES_CHAIN,
            names::COUNT_TRAFFIC_CHAIN,
            names::MASQUERADING_CHAIN,
            names::AFFINITY_UPDATE_CHAIN,
            names::AFFINITY_LOOKUP_CHAIN,
            names::REJECT_CHAIN,
        ]
        .contains(&chain.name.as_str())
}

/// The committed state of a cluster and of the tables compiled from it.
#[derive(Debug, Clone)]
pub struct Incremental {
    cluster: Cluster,
    /// Index of each service in `cluster.services`.
    index: HashMap<(String, String), usize>,
    tables: BTreeMap<Family, TableState>,
    /// The tables' sets without elements, chains with rules.
    shells: Ruleset,
}

impl Incremental {
    /// Start from a cluster and the ruleset `crate::compile` made of it (and that the
    /// kernel now holds).
    pub fn new(cluster: Cluster, compiled: Ruleset) -> Incremental {
        let index = cluster
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.namespace.clone(), s.name.clone()), i))
            .collect();
        let mut shells = compiled;
        let tables = shells
            .tables
            .iter_mut()
            .enumerate()
            .map(|(table, t)| {
                let shards = crate::layout::shard_counts(t);
                let counters = std::mem::take(&mut t.counters).into_iter().collect();
                let elements = t
                    .sets
                    .iter_mut()
                    .map(|s| {
                        let by_key = std::mem::take(&mut s.elements)
                            .into_iter()
                            .map(|e| (e.key.clone(), e))
                            .collect();
                        (s.name.clone(), by_key)
                    })
                    .collect();
                let by_body = t
                    .chains
                    .iter()
                    .filter(|c| !fixed(c))
                    .map(|c| (c.rules.clone(), c.name.clone()))
                    .collect();
                (
                    t.family,
                    TableState {
                        table,
                        elements,
                        by_body,
                        shards,
                        counters,
                    },
                )
            })
            .collect();
        Incremental {
            cluster,
            index,
            tables,
            shells,
        }
    }

    /// The service `namespace/name` as of the last successful update.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.index
            .get(&(namespace.to_string(), name.to_string()))
            .map(|&i| &self.cluster.services[i])
    }

    /// The cluster as of the last successful update.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// `cluster()` with `changes` applied: what a full sync compiles after a refusal.
    pub fn cluster_with(&self, changes: &[Change]) -> Cluster {
        let last = last_changes(changes);
        let mut c = self.cluster.clone();
        c.services.retain_mut(|s| {
            match last.get(&(s.namespace.clone(), s.name.clone())) {
                Some(Change::Upsert(new)) => *s = new.clone(),
                Some(Change::Remove { .. }) => return false,
                None => {}
            }
            true
        });
        let mut added: Vec<&Service> = last
            .iter()
            .filter(|(key, _)| !self.index.contains_key(*key))
            .filter_map(|(_, ch)| match ch {
                Change::Upsert(s) => Some(s),
                Change::Remove { .. } => None,
            })
            .collect();
        added.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        c.services.extend(added.into_iter().cloned());
        c
    }

    /// The tables' set declarations (no elements) and chains: what a backend needs besides
    /// a transaction to encode it.
    pub fn shells(&self) -> &Ruleset {
        &self.shells
    }

    /// What the kernel holds: the last full compile plus every update since (elements in
    /// no particular order). Costs as much as the ruleset is large; for drift checks.
    pub fn expected(&self) -> Ruleset {
        Ruleset {
            tables: self
                .tables
                .values()
                .map(|st| {
                    let mut t = self.shells.tables[st.table].clone();
                    t.counters = st.counters.iter().cloned().collect();
                    t.counters.sort();
                    for s in &mut t.sets {
                        if let Some(els) = st.elements.get(&s.name) {
                            s.elements = els.values().cloned().collect();
                        }
                    }
                    t
                })
                .collect(),
        }
    }

    /// Affinity entries and UDP flows `tx` (the last [`Incremental::update`]) leaves pointing
    /// at endpoints their frontend no longer has; delete them after committing `tx`.
    pub fn stale(&self, tx: &Transaction) -> Stale {
        let get = |family: Family, set: &str, key: &[crate::model::Value]| {
            self.tables
                .get(&family)
                .and_then(|st| st.elements.get(set))
                .and_then(|els| els.get(key))
        };
        stale::stale(
            tx,
            |family, set, key| match get(family, set, key)?.data.as_ref()? {
                crate::model::ElementData::Values(v) => Some(v.clone()),
                _ => None,
            },
            |family, key| {
                get(family, names::AFFINITY_SERVICES, key).is_some()
                    || get(family, names::AFFINITY_NODEPORTS, key).is_some()
            },
        )
    }

    /// The transaction for `changes`, and the state updated as if it was committed. On a
    /// refusal nothing changes. When the commit fails, drop this state and sync in full.
    pub fn update(&mut self, changes: &[Change]) -> Result<Transaction, Refused> {
        let last = last_changes(changes);
        let mut keys: Vec<&(String, String)> = last.keys().collect();
        keys.sort();

        // Validate each new service with the node and configuration, alone: conflicts with
        // other services show up below as a key another service holds.
        for key in &keys {
            if let Change::Upsert(svc) = last[*key] {
                let alone = Cluster {
                    node: self.cluster.node.clone(),
                    config: self.cluster.config.clone(),
                    services: vec![svc.clone()],
                    origin: self.cluster.origin.clone(),
                };
                crate::validate::validate(&alone).map_err(|e| {
                    Refused(format!("{}/{} is invalid: {e}", svc.namespace, svc.name))
                })?;
            }
        }

        let mut plans = Vec::new();
        for (family, st) in &self.tables {
            let mut plan = TablePlan::default();
            for key in &keys {
                let old = self.index.get(*key).map(|&i| &self.cluster.services[i]);
                let new = match last[*key] {
                    Change::Upsert(s) => Some(s),
                    Change::Remove { .. } => None,
                };
                let fragment =
                    |s: &Service| lower::lower_service(&self.cluster, s, *family, st.shards);
                let old_t = old.map(fragment);
                let new_t = new.map(fragment);
                plan.service(
                    st,
                    &self.shells.tables[st.table],
                    old_t.as_ref(),
                    new_t.as_ref(),
                )?;
            }
            plan.check_capacity(st, &self.shells.tables[st.table])?;
            plans.push((*family, plan));
        }
        // Families a new service needs that the tables do not have.
        for key in &keys {
            if let Change::Upsert(s) = last[*key] {
                for ip in &s.cluster_ips {
                    let f = Family::of(ip);
                    if !self.tables.contains_key(&f) {
                        return Err(Refused(format!("first service of family {f:?}")));
                    }
                }
            }
        }

        // Everything checked: build the transaction and commit it to the state.
        let mut phases: [Vec<Op>; 4] = Default::default();
        for (family, plan) in plans {
            let st = self.tables.get_mut(&family).expect("planned per table");
            plan.commit(st, &mut self.shells.tables[st.table], &mut phases);
        }
        for key in keys {
            match (last[key], self.index.get(key).copied()) {
                (Change::Upsert(s), Some(i)) => self.cluster.services[i] = s.clone(),
                (Change::Upsert(s), None) => {
                    self.index.insert(key.clone(), self.cluster.services.len());
                    self.cluster.services.push(s.clone());
                }
                (Change::Remove { .. }, Some(i)) => {
                    self.cluster.services.swap_remove(i);
                    self.index.remove(key);
                    if let Some(moved) = self.cluster.services.get(i) {
                        self.index
                            .insert((moved.namespace.clone(), moved.name.clone()), i);
                    }
                }
                (Change::Remove { .. }, None) => {}
            }
        }
        Ok(Transaction {
            ops: phases.into_iter().flatten().collect(),
        })
    }
}

/// The changes to one table, checked but not yet committed.
#[derive(Default)]
struct TablePlan {
    /// Chains to create, with their rules, in dependency order.
    new_chains: Vec<Chain>,
    /// Fragment chain name → the name the kernel knows it by.
    renames: HashMap<String, String>,
    deletes: BTreeMap<String, Vec<Element>>,
    adds: BTreeMap<String, Vec<Element>>,
    /// Keys deleted or added by this plan, per set, to tell two services' changes apart.
    touched: HashSet<(String, Vec<crate::model::Value>)>,
    /// Counters of service ports that went or came (a service's counters are its own).
    counters_gone: Vec<String>,
    counters_new: Vec<String>,
}

impl TablePlan {
    fn resolve_chains(
        &mut self,
        st: &TableState,
        shell: &Table,
        fragment: &Table,
    ) -> Result<(), Refused> {
        for c in fragment.chains.iter().filter(|c| fixed(c)) {
            let Some(have) = shell.chain(&c.name) else {
                return Err(Refused(format!("chain {} is new", c.name)));
            };
            if let Some(r) = c.rules.iter().find(|r| !have.rules.contains(r)) {
                return Err(Refused(format!(
                    "chain {} needs a new rule ({:?})",
                    c.name, r.comment
                )));
            }
        }
        // Chains refer to chains defined before them in no particular order: resolve those
        // whose references are resolved, until all are.
        let mut todo: Vec<&Chain> = fragment.chains.iter().filter(|c| !fixed(c)).collect();
        let local: HashSet<&str> = todo.iter().map(|c| c.name.as_str()).collect();
        while !todo.is_empty() {
            let before = todo.len();
            let mut later = Vec::new();
            for c in todo {
                let pending = c
                    .rules
                    .iter()
                    .flat_map(Rule::jump_targets)
                    .any(|t| local.contains(t) && !self.renames.contains_key(t) && t != c.name);
                if pending {
                    later.push(c);
                    continue;
                }
                let mut rules = c.rules.clone();
                rules.iter_mut().for_each(|r| r.retarget(&self.renames));
                let known = st
                    .by_body
                    .get(&rules)
                    .or_else(|| {
                        self.new_chains
                            .iter()
                            .find(|n| n.rules == rules)
                            .map(|n| &n.name)
                    })
                    .cloned();
                let name = match known {
                    Some(name) => name,
                    None => {
                        if shell.chain(&c.name).is_some()
                            || self.new_chains.iter().any(|n| n.name == c.name)
                        {
                            return Err(Refused(format!(
                                "chain {} exists with other rules",
                                c.name
                            )));
                        }
                        self.new_chains.push(Chain { rules, ..c.clone() });
                        c.name.clone()
                    }
                };
                self.renames.insert(c.name.clone(), name);
            }
            if later.len() == before {
                return Err(Refused("chains refer to each other in a cycle".into()));
            }
            todo = later;
        }
        Ok(())
    }

    /// Plan one service's change from its old to its new fragment.
    fn service(
        &mut self,
        st: &TableState,
        shell: &Table,
        old: Option<&Table>,
        new: Option<&Table>,
    ) -> Result<(), Refused> {
        if let Some(new) = new {
            self.resolve_chains(st, shell, new)?;
            for s in &new.sets {
                let Some(have) = shell.set(&s.name) else {
                    return Err(Refused(format!("set {} is new", s.name)));
                };
                if !same_but_size(have, s) {
                    return Err(Refused(format!("set {} is declared differently", s.name)));
                }
            }
        }
        let counters = |t: Option<&Table>| -> HashSet<String> {
            t.map(|t| t.counters.iter().cloned().collect())
                .unwrap_or_default()
        };
        let (old_counters, new_counters) = (counters(old), counters(new));
        for c in old_counters.difference(&new_counters) {
            if st.counters.contains(c) {
                self.counters_gone.push(c.clone());
            }
        }
        for c in new_counters.difference(&old_counters) {
            if !st.counters.contains(c) {
                self.counters_new.push(c.clone());
            }
        }
        let empty = Vec::new();
        let elements = |t: Option<&Table>, set: &str| -> Vec<Element> {
            t.and_then(|t| t.set(set))
                .map_or(&empty, |s| &s.elements)
                .clone()
        };
        let mut sets: Vec<&str> = old
            .iter()
            .chain(new.iter())
            .flat_map(|t| t.sets.iter().map(|s| s.name.as_str()))
            .filter(|s| !node_level(s))
            .collect();
        sets.sort();
        sets.dedup();
        for set in sets {
            let held = st.elements.get(set);
            let held_at = |k: &Vec<crate::model::Value>| held.and_then(|h| h.get(k));
            let mut new_els = elements(new, set);
            for e in &mut new_els {
                e.retarget(&self.renames);
            }
            let new_keys: HashSet<&Vec<crate::model::Value>> =
                new_els.iter().map(|e| &e.key).collect();
            for e in elements(old, set) {
                // Hairpin addresses may be another service's too: never deleted here.
                if new_keys.contains(&e.key) || set == names::HAIRPIN {
                    continue;
                }
                if let Some(held) = held_at(&e.key) {
                    self.touch(set, &e.key)?;
                    self.deletes
                        .entry(set.to_string())
                        .or_default()
                        .push(held.clone());
                }
            }
            let old_keys: HashSet<Vec<crate::model::Value>> =
                elements(old, set).into_iter().map(|e| e.key).collect();
            for e in new_els {
                match held_at(&e.key) {
                    Some(h) if *h == e => continue,
                    Some(_) if set == names::HAIRPIN => continue,
                    Some(h) => {
                        if !old_keys.contains(&e.key) {
                            return Err(Refused(format!(
                                "{set} already holds {:?} for another service",
                                e.key
                            )));
                        }
                        self.touch(set, &e.key)?;
                        self.deletes
                            .entry(set.to_string())
                            .or_default()
                            .push(h.clone());
                    }
                    None => self.touch(set, &e.key)?,
                }
                self.adds.entry(set.to_string()).or_default().push(e);
            }
        }
        Ok(())
    }

    fn touch(&mut self, set: &str, key: &[crate::model::Value]) -> Result<(), Refused> {
        // Hairpin addresses may be shared; any other key belongs to one service.
        if self.touched.insert((set.to_string(), key.to_vec())) || set == names::HAIRPIN {
            Ok(())
        } else {
            Err(Refused(format!(
                "two changed services both claim {key:?} in {set}"
            )))
        }
    }

    /// Refuses when a set would hold more elements than its declared size, which the kernel
    /// would refuse (`ENFILE`); the full sync that follows gives the set a bigger one.
    fn check_capacity(&self, st: &TableState, shell: &Table) -> Result<(), Refused> {
        for (set, adds) in &self.adds {
            let Some(size) = shell.set(set).and_then(|s| s.size) else {
                continue;
            };
            let held = st.elements.get(set);
            let has = |k: &Vec<crate::model::Value>| held.is_some_and(|h| h.contains_key(k));
            let deleted: HashSet<&Vec<crate::model::Value>> = self
                .deletes
                .get(set)
                .into_iter()
                .flatten()
                .map(|e| &e.key)
                .filter(|k| has(k))
                .collect();
            let added: HashSet<&Vec<crate::model::Value>> = adds
                .iter()
                .map(|e| &e.key)
                .filter(|k| !has(k) || deleted.contains(k))
                .collect();
            let count = held.map_or(0, |h| h.len()) - deleted.len() + added.len();
            if count > size as usize {
                return Err(Refused(format!(
                    "set {set} would hold {count} elements, more than its size {size}"
                )));
            }
        }
        Ok(())
    }

    fn commit(mut self, st: &mut TableState, shell: &mut Table, phases: &mut [Vec<Op>; 4]) {
        let [del_elems, add_chains, add_elems, add_rules] = phases;
        let table = TableRef::of(shell);
        for (set, mut elements) in self.deletes {
            let held = st.elements.entry(set.clone()).or_default();
            elements.retain(|e| held.remove(&e.key).is_some());
            if !elements.is_empty() {
                del_elems.push(Op::DeleteElements {
                    table: table.clone(),
                    set,
                    elements,
                });
            }
        }
        // Counters go once no element names them, and come before elements name them.
        self.counters_gone.sort();
        self.counters_new.sort();
        if !self.counters_gone.is_empty() {
            for c in &self.counters_gone {
                st.counters.remove(c);
            }
            del_elems.push(Op::DeleteCounters {
                table: table.clone(),
                names: self.counters_gone,
            });
        }
        if !self.counters_new.is_empty() {
            st.counters.extend(self.counters_new.iter().cloned());
            add_chains.push(Op::AddCounters {
                table: table.clone(),
                names: self.counters_new,
            });
        }
        for chain in self.new_chains {
            add_new_chain(&table, &chain, add_chains, add_rules);
            st.by_body.insert(chain.rules.clone(), chain.name.clone());
            shell.chains.push(chain);
        }
        for (set, mut elements) in self.adds {
            let held = st.elements.entry(set.clone()).or_default();
            elements.retain(|e| held.get(&e.key) != Some(e));
            elements.dedup();
            for e in &elements {
                held.insert(e.key.clone(), e.clone());
            }
            if !elements.is_empty() {
                add_elems.push(Op::AddElements {
                    table: table.clone(),
                    set,
                    elements,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
