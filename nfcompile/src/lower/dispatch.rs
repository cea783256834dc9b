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
            let comment_as = |role: Role| {
                FrontendComment {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                    port: port.name.clone(),
                    role,
                }
                .to_string()
            };
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
