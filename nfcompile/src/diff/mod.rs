//! The smallest transaction that turns one ruleset into another.
//!
//! A peer backend over the model, like the text emitter. Operations come in an order the
//! kernel accepts within one transaction: nothing is deleted while something still refers
//! to it, nothing is referred to before it exists.
//!
//! 1. flush chains whose rules change (their references go with the rules)
//! 2. delete elements that go or change (a changed value is a delete and an add)
//! 3. delete sets that go or whose declaration changes (their elements may name chains),
//! 4. delete chains
//! 5. add sets, 6. add chains, 7. add elements, 8. refill flushed and new chains
//!
//! Counter objects are added with the sets (step 5, before the elements naming them) and
//! deleted with the chains (step 4, once no element names them). A counter both sides have
//! is never touched, so it keeps counting across applies.
//!
//! Element operations are grouped per set, so each becomes one netlink message; rules are
//! compared structurally, elements by value.

pub mod describe;

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::model::{Chain, Element, Family, Rule, Ruleset, Set, Table};

/// Which table an operation is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TableRef {
    pub family: Family,
    pub name: String,
}

impl TableRef {
    pub(crate) fn of(t: &Table) -> TableRef {
        TableRef {
            family: t.family,
            name: t.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A whole new table with everything in it.
    AddTable {
        table: Table,
    },
    DeleteTable {
        table: TableRef,
    },
    FlushChain {
        table: TableRef,
        chain: String,
    },
    DeleteElements {
        table: TableRef,
        set: String,
        elements: Vec<Element>,
    },
    DeleteChain {
        table: TableRef,
        chain: String,
    },
    DeleteSet {
        table: TableRef,
        set: String,
        map: bool,
    },
    /// The declaration only; elements follow in their own operation.
    AddSet {
        table: TableRef,
        set: Set,
    },
    /// An empty chain; rules follow.
    AddChain {
        table: TableRef,
        chain: Chain,
    },
    AddElements {
        table: TableRef,
        set: String,
        elements: Vec<Element>,
    },
    AddRules {
        table: TableRef,
        chain: String,
        rules: Vec<Rule>,
    },
    /// Named counters, created at zero.
    AddCounters {
        table: TableRef,
        names: Vec<String>,
    },
    /// Named counters no element refers to any more; their counts are lost.
    DeleteCounters {
        table: TableRef,
        names: Vec<String>,
    },
}

/// An ordered list of operations; empty when nothing changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Transaction {
    pub ops: Vec<Op>,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Counter objects (created, deleted), outside whole-table operations: a deleted counter
    /// loses its counts, which `plan` says.
    pub fn counter_changes(&self) -> (usize, usize) {
        self.ops.iter().fold((0, 0), |(new, gone), op| match op {
            Op::AddCounters { names, .. } => (new + names.len(), gone),
            Op::DeleteCounters { names, .. } => (new, gone + names.len()),
            _ => (new, gone),
        })
    }

    /// Elements added and deleted, over all operations (a changed element counts twice).
    pub fn element_changes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::AddElements { elements, .. } | Op::DeleteElements { elements, .. } => {
                    elements.len()
                }
                Op::AddTable { table } => table.sets.iter().map(|s| s.elements.len()).sum(),
                _ => 0,
            })
            .sum()
    }
}

/// Compute the transaction that turns `current` into `desired`.
pub fn diff(current: &Ruleset, desired: &Ruleset) -> Transaction {
    let mut phases: [Vec<Op>; 8] = Default::default();
    let mut table_ops = Vec::new();
    let cur: BTreeMap<TableRef, &Table> = current
        .tables
        .iter()
        .map(|t| (TableRef::of(t), t))
        .collect();
    let want: BTreeMap<TableRef, &Table> = desired
        .tables
        .iter()
        .map(|t| (TableRef::of(t), t))
        .collect();
    for (r, t) in &want {
        match cur.get(r) {
            None => table_ops.push(Op::AddTable {
                table: (*t).clone(),
            }),
            Some(c) => diff_table(r, c, t, &mut phases),
        }
    }
    for r in cur.keys().filter(|r| !want.contains_key(*r)) {
        table_ops.insert(0, Op::DeleteTable { table: r.clone() });
    }
    let mut ops: Vec<Op> = table_ops
        .iter()
        .filter(|o| matches!(o, Op::DeleteTable { .. }))
        .cloned()
        .collect();
    ops.extend(phases.into_iter().flatten());
    ops.extend(
        table_ops
            .into_iter()
            .filter(|o| matches!(o, Op::AddTable { .. })),
    );
    Transaction { ops }
}

/// A chain that does not exist yet: created empty, its rules added once every chain exists
/// (rules may jump to chains created in the same transaction).
pub(crate) fn add_new_chain(
    table: &TableRef,
    chain: &Chain,
    add_chains: &mut Vec<Op>,
    add_rules: &mut Vec<Op>,
) {
    add_chains.push(Op::AddChain {
        table: table.clone(),
        chain: Chain {
            rules: Vec::new(),
            ..chain.clone()
        },
    });
    if !chain.rules.is_empty() {
        add_rules.push(Op::AddRules {
            table: table.clone(),
            chain: chain.name.clone(),
            rules: chain.rules.clone(),
        });
    }
}

/// Whether two sets are declared alike (elements aside).
pub(crate) fn same_declaration(a: &Set, b: &Set) -> bool {
    a.size == b.size && same_but_size(a, b)
}

/// Whether two sets are declared alike but for their sizes: a service's fragment is
/// lowered without them (the table's capacity is not the service's to choose).
pub(crate) fn same_but_size(a: &Set, b: &Set) -> bool {
    a.key == b.key
        && a.data == b.data
        && a.flags == b.flags
        && a.timeout == b.timeout
        && a.comment == b.comment
}

/// Let `desired` keep the sizes `current` (the kernel's, or the last commit) gives its sets
/// while they fit: a size is a capacity ([`crate::layout::capacity`]), and recreating a set
/// because its count crossed a power of two would reload all its elements. A set is
/// resized when its elements no longer fit, or when it is more than four times the size
/// the lowering wants. Returns how many sizes were kept.
pub fn keep_capacities(current: &Ruleset, desired: &mut Ruleset) -> usize {
    let mut kept = 0;
    for t in &mut desired.tables {
        let Some(cur) = current
            .tables
            .iter()
            .find(|c| c.family == t.family && c.name == t.name)
        else {
            continue;
        };
        for set in &mut t.sets {
            let (Some(have), Some(want)) = (cur.set(&set.name), set.size) else {
                continue;
            };
            let Some(live) = have.size else { continue };
            let fits = set.elements.len() <= live as usize;
            let modest = u64::from(live) <= 4 * u64::from(want);
            if live != want
                && fits
                && modest
                && crate::layout::capacity::sized_by_capacity(set.flags)
                && same_but_size(have, set)
            {
                set.size = Some(live);
                kept += 1;
            }
        }
    }
    kept
}

fn same_shell(a: &Chain, b: &Chain) -> bool {
    a.base == b.base && a.comment == b.comment
}

/// Names of the sets and chains a rule refers to.
fn rule_refs(rule: &Rule) -> impl Iterator<Item = &str> {
    use crate::model::{Match, SetRef, Statement};
    let sets = rule.matches.iter().filter_map(|m| match m {
        Match::Lookup {
            set: SetRef::Named(n),
            ..
        } => Some(n.as_str()),
        _ => None,
    });
    let rest = rule.statements.iter().filter_map(|s| match s {
        Statement::VerdictMap { map, .. }
        | Statement::DnatMap { map, .. }
        | Statement::CounterMap { map, .. } => Some(map.as_str()),
        Statement::UpdateMap { set, .. } => Some(set.as_str()),
        Statement::Verdict(v) => v.target(),
        _ => None,
    });
    sets.chain(rest)
}

/// Names of `current` items that `wanted` lacks or declares differently.
fn replaced<'a, T>(
    current: &'a [T],
    wanted: &FxHashMap<&str, &T>,
    name: fn(&T) -> &String,
    same: fn(&T, &T) -> bool,
) -> FxHashSet<&'a str> {
    current
        .iter()
        .filter(|c| wanted.get(name(c).as_str()).is_none_or(|w| !same(c, w)))
        .map(|c| name(c).as_str())
        .collect()
}

fn diff_table(r: &TableRef, cur: &Table, want: &Table, phases: &mut [Vec<Op>; 8]) {
    let [flush, del_elems, del_sets, del_chains, add_sets, add_chains, add_elems, add_rules] =
        phases;
    let cur_sets: FxHashMap<&str, &Set> = cur.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let want_sets: FxHashMap<&str, &Set> = want.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let cur_chains: FxHashMap<&str, &Chain> =
        cur.chains.iter().map(|c| (c.name.as_str(), c)).collect();

    // Sets that disappear (or are redeclared): every rule naming them must be flushed first.
    let replaced_sets = replaced(&cur.sets, &want_sets, |s| &s.name, same_declaration);
    // Chains that disappear (or change hook/comment).
    let want_chains: FxHashMap<&str, &Chain> =
        want.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let replaced_chains = replaced(&cur.chains, &want_chains, |c| &c.name, same_shell);

    // 1 / 8: chains whose rules change, or that refer to something replaced, are refilled.
    for c in &want.chains {
        match cur_chains.get(c.name.as_str()) {
            Some(old) if !replaced_chains.contains(c.name.as_str()) => {
                let refers = old
                    .rules
                    .iter()
                    .flat_map(rule_refs)
                    .any(|n| replaced_sets.contains(n) || replaced_chains.contains(n));
                if old.rules != c.rules || refers {
                    if !old.rules.is_empty() {
                        flush.push(Op::FlushChain {
                            table: r.clone(),
                            chain: c.name.clone(),
                        });
                    }
                    if !c.rules.is_empty() {
                        add_rules.push(Op::AddRules {
                            table: r.clone(),
                            chain: c.name.clone(),
                            rules: c.rules.clone(),
                        });
                    }
                }
            }
            _ => add_new_chain(r, c, add_chains, add_rules),
        }
    }
    // Chains that go. The kernel deletes a chain together with its rules; only when those
    // rules name a set that goes too must they go first, or the set could not be deleted.
    // A going chain still jumped to by another going chain is deleted after it.
    let mut going: Vec<&Chain> = cur
        .chains
        .iter()
        .filter(|c| replaced_chains.contains(c.name.as_str()))
        .collect();
    while !going.is_empty() {
        let referred: FxHashSet<&str> = going
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(rule_refs)
            .collect();
        let (now, later): (Vec<&Chain>, Vec<&Chain>) = going
            .iter()
            .partition(|c| !referred.contains(c.name.as_str()));
        let now = if now.is_empty() { later.clone() } else { now }; // a cycle: the kernel sorts it out
        for c in &now {
            if c.rules
                .iter()
                .flat_map(rule_refs)
                .any(|n| replaced_sets.contains(n))
            {
                flush.push(Op::FlushChain {
                    table: r.clone(),
                    chain: c.name.clone(),
                });
            }
            del_chains.push(Op::DeleteChain {
                table: r.clone(),
                chain: c.name.clone(),
            });
        }
        going.retain(|c| !now.iter().any(|n| n.name == c.name));
    }

    // Elements, per set.
    for s in &want.sets {
        match cur_sets.get(s.name.as_str()) {
            Some(old) if !replaced_sets.contains(s.name.as_str()) => {
                let (gone, new) = element_changes(&old.elements, &s.elements, &replaced_chains);
                if !gone.is_empty() {
                    del_elems.push(Op::DeleteElements {
                        table: r.clone(),
                        set: s.name.clone(),
                        elements: gone,
                    });
                }
                if !new.is_empty() {
                    add_elems.push(Op::AddElements {
                        table: r.clone(),
                        set: s.name.clone(),
                        elements: new,
                    });
                }
            }
            _ => {
                add_sets.push(Op::AddSet {
                    table: r.clone(),
                    set: Set {
                        elements: Vec::new(),
                        ..s.clone()
                    },
                });
                if !s.elements.is_empty() {
                    add_elems.push(Op::AddElements {
                        table: r.clone(),
                        set: s.name.clone(),
                        elements: s.elements.clone(),
                    });
                }
            }
        }
    }
    for s in &cur.sets {
        if replaced_sets.contains(s.name.as_str()) {
            del_sets.push(Op::DeleteSet {
                table: r.clone(),
                set: s.name.clone(),
                map: s.is_map(),
            });
        }
    }

    // Counters: by name; elements naming them were deleted above, or are added below.
    let missing = |from: &[String], other: &[String]| -> Vec<String> {
        let other: FxHashSet<&String> = other.iter().collect();
        from.iter()
            .filter(|n| !other.contains(n))
            .cloned()
            .collect()
    };
    let gone = missing(&cur.counters, &want.counters);
    if !gone.is_empty() {
        del_chains.push(Op::DeleteCounters {
            table: r.clone(),
            names: gone,
        });
    }
    let new = missing(&want.counters, &cur.counters);
    if !new.is_empty() {
        add_sets.push(Op::AddCounters {
            table: r.clone(),
            names: new,
        });
    }
}

/// `(deleted, added)` elements between two lists of one set; elements compare whole. An
/// element naming a chain that is deleted and re-created must go before the chain can, so it
/// is deleted and added again even though its value stays.
fn targets(e: &Element, chains: &FxHashSet<&str>) -> bool {
    matches!(&e.data, Some(crate::model::ElementData::Verdict(v)) if v.target().is_some_and(|c| chains.contains(c)))
}

fn element_changes(
    old: &[Element],
    new: &[Element],
    replaced_chains: &FxHashSet<&str>,
) -> (Vec<Element>, Vec<Element>) {
    let targets_replaced = |e: &Element| targets(e, replaced_chains);
    // Elements keep lowering order, so a change to a few services is a short run in the
    // middle: skip the common beginning and end before hashing what is left.
    // An equal element that names a replaced chain is not common: it must be re-added.
    let common = |(a, b): &(&Element, &Element)| a == b && !targets_replaced(a);
    let head = old.iter().zip(new).take_while(common).count();
    let (old, new) = (&old[head..], &new[head..]);
    let tail = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(common)
        .count();
    let (old, new) = (&old[..old.len() - tail], &new[..new.len() - tail]);
    // Read-back elements come in the kernel's hash order, so after a read nothing is
    // trimmed above: hundreds of thousands of elements are hashed here, with a fast hash.
    let old_set: FxHashSet<&Element> = old.iter().filter(|e| !targets_replaced(e)).collect();
    let new_set: FxHashSet<&Element> = new.iter().filter(|e| !targets_replaced(e)).collect();
    let gone = old
        .iter()
        .filter(|e| !new_set.contains(e))
        .cloned()
        .collect();
    let added = new
        .iter()
        .filter(|e| !old_set.contains(e))
        .cloned()
        .collect();
    (gone, added)
}

/// Apply a transaction to a model, the way the kernel would: used by tests and by `plan`
/// to check that `apply(a, diff(a, b)) == b` without a kernel.
pub fn apply(current: &Ruleset, tx: &Transaction) -> Result<Ruleset, String> {
    let mut rs = current.clone();
    let table = |rs: &mut Ruleset, r: &TableRef| -> Result<usize, String> {
        rs.tables
            .iter()
            .position(|t| t.family == r.family && t.name == r.name)
            .ok_or_else(|| format!("no table {:?} {}", r.family, r.name))
    };
    for op in &tx.ops {
        match op {
            Op::AddTable { table: t } => rs.tables.push(t.clone()),
            Op::DeleteTable { table: r } => {
                let i = table(&mut rs, r)?;
                rs.tables.remove(i);
            }
            Op::FlushChain { table: r, chain } => {
                let i = table(&mut rs, r)?;
                let c = rs.tables[i]
                    .chains
                    .iter_mut()
                    .find(|c| &c.name == chain)
                    .ok_or(format!("flush of missing chain {chain}"))?;
                c.rules.clear();
            }
            Op::DeleteElements {
                table: r,
                set,
                elements,
            } => {
                let i = table(&mut rs, r)?;
                let s = rs.tables[i]
                    .sets
                    .iter_mut()
                    .find(|s| &s.name == set)
                    .ok_or(format!("no set {set}"))?;
                let gone: FxHashSet<&Element> = elements.iter().collect();
                let before = s.elements.len();
                s.elements.retain(|e| !gone.contains(e));
                if before - s.elements.len() != elements.len() {
                    return Err(format!("deleting elements that {set} does not hold"));
                }
            }
            Op::DeleteChain { table: r, chain } => {
                let i = table(&mut rs, r)?;
                let t = &mut rs.tables[i];
                let c = t
                    .chains
                    .iter()
                    .position(|c| &c.name == chain)
                    .ok_or(format!("no chain {chain}"))?;
                // Its own rules go with it (as in the kernel); references from elsewhere may not.
                let referred = t
                    .chains
                    .iter()
                    .filter(|c| &c.name != chain)
                    .flat_map(|c| &c.rules)
                    .flat_map(rule_refs)
                    .any(|n| n == chain)
                    || t.sets.iter().flat_map(|s| &s.elements).any(|e| {
                        matches!(&e.data, Some(crate::model::ElementData::Verdict(v)) if v.target() == Some(chain.as_str()))
                    });
                if referred {
                    return Err(format!(
                        "deleting chain {chain} while it is still referred to"
                    ));
                }
                t.chains.remove(c);
            }
            Op::DeleteSet { table: r, set, .. } => {
                let i = table(&mut rs, r)?;
                let t = &mut rs.tables[i];
                if t.chains
                    .iter()
                    .flat_map(|c| &c.rules)
                    .flat_map(rule_refs)
                    .any(|n| n == set)
                {
                    return Err(format!("deleting set {set} while a rule refers to it"));
                }
                t.sets.retain(|s| &s.name != set);
            }
            Op::AddSet { table: r, set } => {
                let i = table(&mut rs, r)?;
                rs.tables[i].sets.push(set.clone());
            }
            Op::AddChain { table: r, chain } => {
                let i = table(&mut rs, r)?;
                rs.tables[i].chains.push(chain.clone());
            }
            Op::AddElements {
                table: r,
                set,
                elements,
            } => {
                let i = table(&mut rs, r)?;
                let s = rs.tables[i]
                    .sets
                    .iter_mut()
                    .find(|s| &s.name == set)
                    .ok_or(format!("no set {set}"))?;
                s.elements.extend(elements.iter().cloned());
                // The kernel refuses an element past a set's size (ENFILE).
                if let Some(size) = s.size.filter(|&n| s.elements.len() > n as usize) {
                    return Err(format!(
                        "set {set} is full: {} elements, size {size}",
                        s.elements.len()
                    ));
                }
            }
            Op::AddRules {
                table: r,
                chain,
                rules,
            } => {
                let i = table(&mut rs, r)?;
                let c = rs.tables[i]
                    .chains
                    .iter_mut()
                    .find(|c| &c.name == chain)
                    .ok_or(format!("no chain {chain}"))?;
                c.rules.extend(rules.iter().cloned());
            }
            Op::AddCounters { table: r, names } => {
                let i = table(&mut rs, r)?;
                let t = &mut rs.tables[i];
                if let Some(n) = names.iter().find(|n| t.counters.contains(n)) {
                    return Err(format!("adding counter {n}, which exists"));
                }
                t.counters.extend(names.iter().cloned());
            }
            Op::DeleteCounters { table: r, names } => {
                let i = table(&mut rs, r)?;
                let t = &mut rs.tables[i];
                let gone: FxHashSet<&String> = names.iter().collect();
                if let Some(e) = t.sets.iter().flat_map(|s| &s.elements).find(|e| {
                    matches!(&e.data, Some(crate::model::ElementData::Counter(n)) if gone.contains(n))
                }) {
                    return Err(format!(
                        "deleting a counter while element {:?} still names it",
                        e.key
                    ));
                }
                let before = t.counters.len();
                t.counters.retain(|n| !gone.contains(n));
                if before - t.counters.len() != names.len() {
                    return Err("deleting counters the table does not hold".into());
                }
            }
        }
    }
    Ok(rs)
}

/// Order-insensitive comparison form: tables, sets, chains by name; elements sorted.
pub fn canonical(rs: &Ruleset) -> Ruleset {
    let mut rs = rs.clone();
    canonicalize(&mut rs);
    rs
}

/// [`canonical`] in place, for a ruleset the caller owns (no copy).
pub fn canonicalize(rs: &mut Ruleset) {
    rs.tables
        .sort_by(|a, b| (a.family, &a.name).cmp(&(b.family, &b.name)));
    for t in &mut rs.tables {
        t.sets.sort_by(|a, b| a.name.cmp(&b.name));
        t.chains.sort_by(|a, b| a.name.cmp(&b.name));
        t.counters.sort();
        for s in &mut t.sets {
            s.elements.sort();
        }
    }
}

#[cfg(test)]
mod tests;
