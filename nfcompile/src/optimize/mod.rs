//! Passes over the model that make it smaller without changing what any packet sees.
//!
//! Each pass is a free function over one table; [`run`] applies them all to fixpoint. They
//! work on the model alone, so they also apply to rulesets that did not come from lowering.
//! Element order is left as lowering wrote it (grouped by service, in name order): it is
//! already deterministic, and sorting 400k elements would cost more than everything else.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::model::{Chain, ElementData, Rule, Ruleset, Statement, Table};

/// What the passes did, for `--verbose` output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub chains_merged: usize,
    pub chains_dropped: usize,
}

pub fn run(ruleset: &mut Ruleset) -> Stats {
    let mut stats = Stats::default();
    for table in &mut ruleset.tables {
        loop {
            let merged = merge_identical_chains(table);
            stats.chains_merged += merged;
            if merged == 0 {
                break;
            }
        }
        stats.chains_dropped += drop_unreferenced_chains(table);
    }
    stats
}

/// Regular chains with the same rules are one chain: keep the first, point everything at it.
/// Returns how many chains went away.
pub fn merge_identical_chains(table: &mut Table) -> usize {
    let mut first_by_body: FxHashMap<&[Rule], &str> = FxHashMap::default();
    let mut renames: FxHashMap<String, String> = FxHashMap::default();
    for chain in &table.chains {
        if chain.base.is_some() {
            continue;
        }
        match first_by_body.get(chain.rules.as_slice()) {
            // Two chains of one name are the lowering's bug, not a merge: keep both visible.
            Some(keep) if *keep == chain.name => {}
            Some(keep) => {
                renames.insert(chain.name.clone(), keep.to_string());
            }
            None => {
                first_by_body.insert(&chain.rules, &chain.name);
            }
        }
    }
    if renames.is_empty() {
        return 0;
    }
    table.chains.retain(|c| !renames.contains_key(&c.name));
    for chain in &mut table.chains {
        for rule in &mut chain.rules {
            rule.retarget(&renames);
        }
    }
    for set in &mut table.sets {
        for el in &mut set.elements {
            el.retarget(&renames);
        }
    }
    renames.len()
}

/// Regular chains that no base chain can reach, directly or through a verdict map, are dead.
pub fn drop_unreferenced_chains(table: &mut Table) -> usize {
    let by_name: FxHashMap<&str, &Chain> =
        table.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let map_targets = |map: &str| -> Vec<&str> {
        table
            .set(map)
            .map(|s| {
                s.elements
                    .iter()
                    .filter_map(|e| match &e.data {
                        Some(ElementData::Verdict(v)) => v.target(),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut live: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = table
        .chains
        .iter()
        .filter(|c| c.base.is_some())
        .map(|c| c.name.as_str())
        .collect();
    let mut maps_seen: BTreeSet<&str> = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !live.insert(name) {
            continue;
        }
        let Some(chain) = by_name.get(name) else {
            continue;
        };
        for rule in &chain.rules {
            for st in &rule.statements {
                match st {
                    Statement::Verdict(v) => todo.extend(v.target()),
                    Statement::VerdictMap { map, .. } if maps_seen.insert(map.as_str()) => {
                        todo.extend(map_targets(map));
                    }
                    _ => {}
                }
            }
        }
    }
    let live: BTreeSet<String> = live.into_iter().map(str::to_string).collect();
    let before = table.chains.len();
    table.chains.retain(|c| live.contains(&c.name));
    before - table.chains.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn chain(name: &str, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: None,
            comment: None,
            rules,
        }
    }

    fn goto(c: &str) -> Rule {
        Rule {
            matches: vec![],
            statements: vec![Statement::Verdict(Verdict::Goto(c.into()))],
            comment: None,
        }
    }

    fn table(chains: Vec<Chain>) -> Table {
        let mut base = chain("entry", vec![goto("a"), goto("b")]);
        base.base = Some(BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Prerouting,
            priority: -100,
        });
        let mut all = vec![base];
        all.extend(chains);
        Table {
            family: Family::Ipv4,
            name: "t".into(),
            comment: None,
            counters: Vec::new(),
            sets: vec![],
            chains: all,
        }
    }

    #[test]
    fn identical_chains_merge_transitively() {
        let drop = Rule {
            matches: vec![],
            statements: vec![Statement::Verdict(Verdict::Drop)],
            comment: None,
        };
        let mut t = table(vec![
            chain("a", vec![goto("x")]),
            chain("b", vec![goto("y")]),
            chain("x", vec![drop.clone()]),
            chain("y", vec![drop]),
        ]);
        let mut rs = Ruleset {
            tables: vec![t.clone()],
        };
        let stats = run(&mut rs);
        assert_eq!(stats.chains_merged, 2); // y → x, then b → a
        t = rs.tables.remove(0);
        let names: Vec<_> = t.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["entry", "a", "x"]);
        assert_eq!(t.chains[0].rules[1], goto("a"));
    }

    #[test]
    fn unreachable_chains_are_dropped() {
        let mut t = table(vec![
            chain("a", vec![]),
            chain("b", vec![goto("a")]),
            chain("orphan", vec![goto("a")]),
        ]);
        assert_eq!(drop_unreferenced_chains(&mut t), 1);
        assert!(t.chain("orphan").is_none());
    }
}
