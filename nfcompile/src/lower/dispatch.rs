//! The dispatch: each service port's frontends as elements of the dispatch maps, and the
//! source-range firewall of load-balancer frontends.

use super::*;

impl FamilyLowering<'_> {
    pub(super) fn service(&mut self, svc: &Service) {
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
            let comment_as =
                |role: Role| FrontendComment::format(&svc.namespace, &svc.name, &port.name, role);
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

    /// A load-balancer frontend with source ranges: the ranges are allowed, and — when a range
    /// holds the node's primary address of this family (kube-proxy's `allowFromNode`) — the
    /// service's own load-balancer IPs as sources too. A VIP is often a local address, so the
    /// node's own connection to it loops back with the VIP as its source. Nothing else of the
    /// node is added: a node address outside every range stays outside.
    pub(super) fn firewall(&mut self, key: &[Value], ranges: &[IpNetwork], lb_ips: &[IpAddr]) {
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
}

impl FamilyLowering<'_> {
    /// The dispatch chain `services` and the sets it looks in: source ranges, the dispatch
    /// maps of addresses and node ports, allocated cluster IPs, service CIDRs.
    pub(super) fn dispatch_chain(&mut self, sets: &mut Vec<Set>) -> Chain {
        let f = self.family;
        let addr = FieldType::addr(f);
        let addr_key_types = vec![addr, FieldType::InetProto, FieldType::InetService];
        let port_key_types = vec![FieldType::InetProto, FieldType::InetService];
        let counting = self.cluster.config.counters;
        let mut services = Vec::new();
        let dispatch_key = vec![Expr::Daddr(f), Expr::L4Proto, Expr::Dport];
        if !self.firewall_services.is_empty() {
            let allow_key = vec![Expr::Daddr(f), Expr::Dport, Expr::Saddr(f)];
            for (proto, allowed) in std::mem::take(&mut self.firewall_allow) {
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
                std::mem::take(&mut self.firewall_services),
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
            std::mem::take(&mut self.service_ips),
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
                std::mem::take(&mut self.service_nodeports),
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
        Chain {
            name: names::SERVICES_CHAIN.into(),
            base: None,
            comment: None,
            rules: services,
        }
    }
}
