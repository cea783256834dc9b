//! Session affinity: the per-timeout chains that pin a client, and the update chain that
//! writes the affinity map.

use super::*;

impl FamilyLowering<'_> {
    /// Remember which endpoint a client was sent to, after DNAT has chosen it.
    pub(super) fn affinity_chains(&self) -> Vec<Chain> {
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

impl FamilyLowering<'_> {
    /// The affinity map and the sets of frontends with affinity (when any has it).
    pub(super) fn affinity_sets(&mut self, sets: &mut Vec<Set>) {
        let f = self.family;
        let addr = FieldType::addr(f);
        let addr_key_types = vec![addr, FieldType::InetProto, FieldType::InetService];
        let port_key_types = vec![FieldType::InetProto, FieldType::InetService];
        let endpoint_data = SetData::Fields(vec![addr, FieldType::InetService]);
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
                std::mem::take(&mut self.affinity_services),
                "frontends with session affinity",
            ));
        }
        if !self.affinity_nodeports.is_empty() {
            sets.push(set(
                names::AFFINITY_NODEPORTS,
                port_key_types.clone(),
                Some(SetData::Verdict),
                std::mem::take(&mut self.affinity_nodeports),
                "node ports with session affinity",
            ));
        }
    }
}
