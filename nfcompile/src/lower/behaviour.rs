//! Behaviour chains and the frontends that use them: what a frontend does before selection
//! (masquerade marks, affinity, the route to its lists).

use super::*;

impl FamilyLowering<'_> {
    pub(super) fn external_route(&self, svc: &Service, targets: &Targets) -> Option<Route> {
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
    pub(super) fn frontend(
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

    pub(super) fn behaviour_chain(&self, name: &str, b: &Behaviour) -> Chain {
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
}
