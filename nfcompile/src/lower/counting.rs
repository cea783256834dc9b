//! Per-service-port counters: the counter maps' elements and the counting chains.

use super::*;

impl FamilyLowering<'_> {
    /// The (traffic, connections) counters of `port`, declared once; `None` without counting.
    pub(super) fn port_counters(
        &mut self,
        svc: &Service,
        port: &ServicePort,
    ) -> Option<[String; 2]> {
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
    pub(super) fn count(&mut self, keyed: Keyed, key: &[Value], names: Option<&[String; 2]>) {
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

    /// A connection's original destination was an address that takes node ports: a match
    /// when node ports are limited to listed addresses (`None` for any local address, which
    /// only `ct status dnat` can stand in for after DNAT).
    pub(super) fn original_node_port_address(&self) -> Option<Match> {
        matches!(self.node_port_dest, NodePortDest::Addresses(_)).then(|| Match::Lookup {
            key: vec![Expr::CtOriginalDaddr(self.family)],
            set: SetRef::Named(names::NODEPORT_IPS.into()),
            negate: false,
        })
    }

    /// Count every packet of a connection to a frontend in its port's traffic counter, after
    /// DNAT (`dstnat + 10`), by the connection's original destination: replies carry it too.
    /// The protocol match is constant (all three), so the rules do not depend on services.
    pub(super) fn counting_chains(&self, node_ports: bool) -> Vec<Chain> {
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
}

impl FamilyLowering<'_> {
    /// The counter maps (frontend → its port's counters); returns the counter objects.
    pub(super) fn counter_maps(&mut self, sets: &mut Vec<Set>) -> Vec<String> {
        let f = self.family;
        let addr = FieldType::addr(f);
        let addr_key_types = vec![addr, FieldType::InetProto, FieldType::InetService];
        let port_key_types = vec![FieldType::InetProto, FieldType::InetService];
        let node_ports = !matches!(self.node_port_dest, NodePortDest::None);
        let counted = std::mem::take(&mut self.counted);
        let (addr_traffic, addr_connections) = counted.addr;
        let (np_traffic, np_connections) = counted.node_port;
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
        std::mem::take(&mut self.counters).into_iter().collect()
    }
}
