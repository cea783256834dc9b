//! Selection chains: one per (key kind, shard, list, slot capacity), drawing a slot and
//! DNATing through the endpoint map.

use super::*;

impl FamilyLowering<'_> {
    pub(super) fn selection_chains(&self) -> Vec<Chain> {
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
}

/// `local` says which slots hold the list; round robin and Maglev need at least one endpoint
/// (an empty list keeps the random selection, which ends in `drop`).
pub(super) fn list(targets: &[Target], local: bool, svc: &Service) -> List {
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

pub(super) fn non_empty(targets: &[Target], local: bool, svc: &Service) -> Option<List> {
    (!targets.is_empty()).then(|| list(targets, local, svc))
}

impl FamilyLowering<'_> {
    /// The endpoint maps, shard by shard: frontend . slot → endpoint.
    pub(super) fn endpoint_maps(&mut self, sets: &mut Vec<Set>) {
        let f = self.family;
        let addr = FieldType::addr(f);
        let addr_key_types = vec![addr, FieldType::InetProto, FieldType::InetService];
        let port_key_types = vec![FieldType::InetProto, FieldType::InetService];
        let endpoint_data = SetData::Fields(vec![addr, FieldType::InetService]);
        let mut ep_key = addr_key_types;
        ep_key.push(FieldType::Slot);
        let count = self.endpoints.len() as u8;
        for (index, elements) in std::mem::take(&mut self.endpoints).into_iter().enumerate() {
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
            for (index, elements) in std::mem::take(&mut self.nodeport_endpoints)
                .into_iter()
                .enumerate()
            {
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
    }
}
