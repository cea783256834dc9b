use super::*;
use crate::diff::{canonical, diff};
use crate::synth::{self, Rng};

fn compile(c: &Cluster) -> Ruleset {
    crate::compile(c).expect("valid")
}

/// Chains named after what they do: two chains with the same rules (after naming what they
/// refer to the same way) get the same name. The incremental path reuses any existing chain
/// that does the same, where a full compile might keep another of the same kind.
fn by_body(rs: &Ruleset) -> Ruleset {
    let mut rs = rs.clone();
    for t in &mut rs.tables {
        let mut names: HashMap<String, String> = HashMap::new();
        // Chains form a DAG: name those whose targets are named, until all are.
        // Shared chains keep their names (the incremental path never renames them).
        let renamed = |c: &&Chain| c.base.is_none() && !fixed(c);
        for c in t.chains.iter().filter(|c| c.base.is_none() && fixed(c)) {
            names.insert(c.name.clone(), c.name.clone());
        }
        while names.len() < t.chains.iter().filter(|c| c.base.is_none()).count() {
            let before = names.len();
            for c in t.chains.iter().filter(renamed) {
                if names.contains_key(&c.name)
                    || c.rules
                        .iter()
                        .flat_map(Rule::jump_targets)
                        .any(|x| !names.contains_key(x))
                {
                    continue;
                }
                let mut rules = c.rules.clone();
                rules.iter_mut().for_each(|r| r.retarget(&names));
                names.insert(c.name.clone(), format!("{rules:?}"));
            }
            assert!(names.len() > before, "a cycle of chains");
        }
        for c in &mut t.chains {
            c.rules.iter_mut().for_each(|r| r.retarget(&names));
            if let Some(n) = names.get(&c.name) {
                c.name = n.clone();
            }
        }
        let mut seen = HashSet::new();
        t.chains.retain(|c| seen.insert(c.name.clone()));
        for s in &mut t.sets {
            for e in &mut s.elements {
                e.retarget(&names);
            }
        }
    }
    rs
}

/// What a full sync would still change after incremental updates: only the leftovers the
/// incremental path keeps on purpose (unused shared chains, hairpin addresses).
fn assert_only_leftovers(inc: &Incremental, what: &str) {
    // Sizes aside: whether a full sync keeps or resizes a set is `keep_capacities`' policy
    // (tested with it); that the incremental path stays within them, `capacity_*` below.
    let mut full = compile(inc.cluster());
    let expected = inc.expected();
    for (t, e) in full.tables.iter_mut().zip(&expected.tables) {
        for s in &mut t.sets {
            if let Some(size) = e.set(&s.name).and_then(|e| e.size) {
                assert!(
                    s.elements.len() <= size as usize,
                    "{what}: {} overfull",
                    s.name
                );
                s.size = Some(size);
            }
        }
    }
    // The affinity update chain keeps rules for kinds of frontend no longer in use (their maps
    // are empty, so they never match); a full compile drops them, and their maps.
    let update_rules = |rs: &Ruleset| -> Vec<Vec<Rule>> {
        rs.tables
            .iter()
            .map(|t| {
                t.chain(names::AFFINITY_UPDATE_CHAIN)
                    .map(|c| c.rules.clone())
                    .unwrap_or_default()
            })
            .collect()
    };
    let affinity_superset = update_rules(&full)
        .iter()
        .zip(update_rules(&inc.expected()))
        .all(|(f, e)| f.iter().all(|r| e.contains(r)));
    // Likewise the services chain keeps the source-range rule of a protocol whose last
    // load-balancer with source ranges went (its sets are empty, so it never matches).
    let is_firewall = |r: &Rule| {
        r.matches.iter().any(|m| {
            matches!(m, crate::model::Match::Lookup { set: crate::model::SetRef::Named(n), .. }
                if n.starts_with("firewall-allow-"))
        })
    };
    let services_rules = |rs: &Ruleset| -> Vec<Vec<Rule>> {
        rs.tables
            .iter()
            .map(|t| {
                t.chain(names::SERVICES_CHAIN)
                    .map(|c| c.rules.clone())
                    .unwrap_or_default()
            })
            .collect()
    };
    let firewall_superset = services_rules(&full)
        .iter()
        .zip(services_rules(&inc.expected()))
        .all(|(f, e)| {
            f.iter().all(|r| e.contains(r)) && e.iter().all(|r| f.contains(r) || is_firewall(r))
        });
    let empty_in_expected = |family: Family, set: &str| {
        inc.expected()
            .tables
            .iter()
            .filter(|t| t.family == family)
            .filter_map(|t| t.set(set))
            .all(|s| s.elements.is_empty())
    };
    let tx = diff(&by_body(&inc.expected()), &by_body(&full));
    for op in &tx.ops {
        match op {
            Op::DeleteChain { .. } => {}
            Op::FlushChain { chain, .. } | Op::AddRules { chain, .. }
                if chain == names::SERVICES_CHAIN && firewall_superset => {}
            Op::DeleteSet { table, set, .. }
                if (set.starts_with("firewall-allow-") || set == names::FIREWALL_SERVICES)
                    && empty_in_expected(table.family, set) => {}
            Op::DeleteElements { set, .. } if set == names::HAIRPIN => {}
            Op::FlushChain { chain, .. } | Op::AddRules { chain, .. }
                if chain == names::AFFINITY_UPDATE_CHAIN && affinity_superset => {}
            // …and so do their maps, empty.
            Op::DeleteSet { table, set, .. }
                if (set == names::AFFINITY_SERVICES || set == names::AFFINITY_NODEPORTS)
                    && inc
                        .expected()
                        .tables
                        .iter()
                        .filter(|t| t.family == table.family)
                        .filter_map(|t| t.set(set))
                        .all(|s| s.elements.is_empty()) => {}
            other => panic!("{what}: a full sync would still do {other:#?}"),
        }
    }
}

/// Random single-service changes: new endpoints lists, removed and added services.
fn random_change(c: &Cluster, rng: &mut Rng, other: &Cluster) -> Change {
    let i = rng.below(c.services.len() as u64) as usize;
    match rng.below(4) {
        0 => {
            let mut s = c.services[i].clone();
            s.endpoints.pop();
            Change::Upsert(s)
        }
        1 => {
            // Another service's endpoints (of another cluster: new addresses).
            let mut s = c.services[i].clone();
            s.endpoints = other.services[rng.below(other.services.len() as u64) as usize]
                .endpoints
                .clone();
            Change::Upsert(s)
        }
        2 => Change::Remove {
            namespace: c.services[i].namespace.clone(),
            name: c.services[i].name.clone(),
        },
        _ => {
            let mut s = c.services[i].clone();
            s.endpoints.clear();
            Change::Upsert(s)
        }
    }
}

#[test]
fn updates_reach_what_a_full_compile_gives() {
    let (mut incremental, mut refused) = (0, 0);
    for seed in 0..12u64 {
        let c = synth::random(seed, 40);
        let other = synth::random(seed + 100, 40);
        let mut inc = Incremental::new(c.clone(), compile(&c));
        let mut rng = Rng::new(seed);
        let mut model = compile(&c);
        for step in 0..15 {
            if inc.cluster().services.is_empty() {
                break;
            }
            let ch = random_change(inc.cluster(), &mut rng, &other);
            let what = format!("seed {seed} step {step}");
            match inc.update(std::slice::from_ref(&ch)) {
                Ok(tx) => {
                    incremental += 1;
                    model = crate::diff::apply(&model, &tx)
                        .unwrap_or_else(|e| panic!("{what}: the kernel would refuse: {e}"));
                    assert_eq!(canonical(&model), canonical(&inc.expected()), "{what}");
                    assert_only_leftovers(&inc, &what);
                }
                Err(Refused(why)) => {
                    refused += 1;
                    // A full sync, as the caller would do.
                    let c2 = inc.cluster_with(std::slice::from_ref(&ch));
                    let Ok(full) = crate::compile(&c2) else {
                        continue; // an invalid change: the caller reports it, nothing changes
                    };
                    eprintln!("full sync: {why}");
                    model = crate::diff::apply(&model, &diff(&model, &full)).expect("full sync");
                    inc = Incremental::new(c2, full);
                }
            }
        }
    }
    // Most changes must go the incremental way, or this tests little.
    eprintln!("{incremental} incremental updates, {refused} refused");
    assert!(
        incremental > 4 * refused,
        "{incremental} incremental, {refused} refused"
    );
}

#[test]
fn one_endpoint_less_touches_only_that_service() {
    let c = synth::cluster(synth::Shape {
        services: 300,
        endpoints: 5,
        nodes: 3,
    });
    let mut inc = Incremental::new(c.clone(), compile(&c));
    // The first such change may create the chains for 4 endpoints; later ones reuse them.
    for i in [7usize, 13] {
        let mut s = c.services[i].clone();
        s.endpoints.pop();
        let tx = inc.update(&[Change::Upsert(s)]).expect("incremental");
        if i == 13 {
            assert!(tx.ops.len() <= 3, "{:#?}", tx.ops);
        }
        assert_only_leftovers(&inc, &format!("service {i}"));
    }
}

#[test]
fn refusals_change_nothing() {
    let c = synth::cluster(synth::Shape {
        services: 20,
        endpoints: 2,
        nodes: 2,
    });
    let mut inc = Incremental::new(c.clone(), compile(&c));
    let before = canonical(&inc.expected());
    // svc-1 takes svc-0's cluster IP: a conflict the full path reports.
    let mut s = c.services[1].clone();
    s.cluster_ips = c.services[0].cluster_ips.clone();
    assert!(inc.update(&[Change::Upsert(s)]).is_err());
    // A new source-range firewall needs sets the tables do not have yet.
    let mut s = c.services[2].clone();
    s.load_balancer_ips = vec!["172.16.9.9".parse().unwrap()];
    s.load_balancer_source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
    assert!(inc.update(&[Change::Upsert(s)]).is_err());
    assert_eq!(before, canonical(&inc.expected()));
    assert_eq!(inc.cluster(), &c);
}

#[test]
fn affinity_entries_of_a_removed_endpoint_are_stale() {
    use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
    use crate::ir::Protocol;
    use crate::model::Value;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let svc = |eps: &[&str]| {
        let mut b = ServiceBuilder::new("d", "sticky", ip("10.96.0.1"))
            .node_port("p", Protocol::Tcp, 80, 30080)
            .session_affinity(600);
        for e in eps {
            b = b.endpoint(ip(e), Some("n2"), &[("p", 8080)]);
        }
        b.build()
    };
    let plain = ServiceBuilder::new("d", "plain", ip("10.96.0.2"))
        .port("p", Protocol::Tcp, 80)
        .endpoint(ip("10.244.1.9"), Some("n2"), &[("p", 8080)])
        .endpoint(ip("10.244.1.8"), Some("n2"), &[("p", 8080)])
        .build();
    let three = ["10.244.1.1", "10.244.1.2", "10.244.1.3"];
    let cluster = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(svc(&three))
        .service(plain.clone())
        .build();
    let mut inc = Incremental::new(cluster.clone(), compile(&cluster));
    let endpoint = |a: &str| vec![Value::Addr(ip(a)), Value::Port(8080)];
    let pairs = |stale: Vec<StaleEndpoint>| {
        let mut v: Vec<(usize, Vec<Value>)> = stale
            .into_iter()
            .map(|s| (s.frontend.len(), s.endpoint))
            .collect();
        v.sort();
        v
    };

    // One endpoint fewer: its entries at the cluster IP and at the node port.
    let tx = inc.update(&[Change::Upsert(svc(&three[..2]))]).unwrap();
    let want = vec![(2, endpoint("10.244.1.3")), (3, endpoint("10.244.1.3"))];
    assert_eq!(pairs(inc.stale(&tx).affinity_entries), want);
    assert_eq!(pairs(stale_in(&tx, &inc.expected()).affinity_entries), want);

    // One more, and endpoints of a service without affinity: nothing.
    let tx = inc.update(&[Change::Upsert(svc(&three))]).unwrap();
    assert!(inc.stale(&tx).affinity_entries.is_empty());
    let mut fewer = plain.clone();
    fewer.endpoints.pop();
    let tx = inc.update(&[Change::Upsert(fewer)]).unwrap();
    assert!(inc.stale(&tx).affinity_entries.is_empty());

    // Scaling 2 → 1 rewrites slots of the survivor too; only the one that left is stale.
    inc.update(&[Change::Upsert(svc(&three[..2]))]).unwrap();
    let tx = inc.update(&[Change::Upsert(svc(&three[..1]))]).unwrap();
    assert_eq!(
        pairs(inc.stale(&tx).affinity_entries),
        vec![(2, endpoint("10.244.1.2")), (3, endpoint("10.244.1.2"))]
    );

    // The service gone: all of its entries.
    let tx = inc
        .update(&[Change::Remove {
            namespace: "d".into(),
            name: "sticky".into(),
        }])
        .unwrap();
    assert_eq!(
        pairs(inc.stale(&tx).affinity_entries),
        vec![(2, endpoint("10.244.1.1")), (3, endpoint("10.244.1.1"))]
    );

    // What an entry looks like in the kernel's map: client . frontend : endpoint.
    let s = StaleEndpoint {
        family: Family::Ipv4,
        frontend: vec![Value::Proto(Protocol::Tcp), Value::Port(30080)],
        endpoint: endpoint("10.244.1.1"),
    };
    let entry = |daddr: &str, to: &str| Element {
        key: vec![
            Value::Addr(ip("192.168.5.5")),
            Value::Addr(ip(daddr)),
            Value::Proto(Protocol::Tcp),
            Value::Port(30080),
        ],
        data: Some(crate::model::ElementData::Values(endpoint(to))),
        comment: None,
    };
    assert!(s.matches(&entry("192.168.0.1", "10.244.1.1")));
    assert!(!s.matches(&entry("192.168.0.1", "10.244.1.2")));
}

#[test]
fn udp_flows_of_a_removed_endpoint_are_stale_and_only_for_udp() {
    use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
    use crate::ir::Protocol;
    use crate::model::Value;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let svc = |name: &str, vip: &str, proto: Protocol, eps: &[&str]| {
        let mut b = ServiceBuilder::new("d", name, ip(vip)).port("p", proto, 53);
        for e in eps {
            b = b.endpoint(ip(e), Some("n2"), &[("p", 5353)]);
        }
        b.build()
    };
    let dns = ["10.244.1.1", "10.244.1.2"];
    let tcp = ["10.244.2.1", "10.244.2.2"];
    let cluster = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(svc("dns", "10.96.0.10", Protocol::Udp, &dns))
        .service(svc("web", "10.96.0.11", Protocol::Tcp, &tcp))
        .build();
    let mut inc = Incremental::new(cluster.clone(), compile(&cluster));
    let tx = inc
        .update(&[
            Change::Upsert(svc("dns", "10.96.0.10", Protocol::Udp, &dns[..1])),
            Change::Upsert(svc("web", "10.96.0.11", Protocol::Tcp, &tcp[..1])),
        ])
        .unwrap();
    let want = vec![StaleEndpoint {
        family: Family::Ipv4,
        frontend: vec![
            Value::Addr(ip("10.96.0.10")),
            Value::Proto(Protocol::Udp),
            Value::Port(53),
        ],
        endpoint: vec![Value::Addr(ip("10.244.1.2")), Value::Port(5353)],
    }];
    assert_eq!(inc.stale(&tx).udp_flows, want);
    assert_eq!(stale_in(&tx, &inc.expected()).udp_flows, want);
    // Neither service has affinity.
    assert!(inc.stale(&tx).affinity_entries.is_empty());
}

#[test]
fn counters_come_and_go_with_their_service_and_survive_endpoint_changes() {
    let mut c = synth::cluster(synth::Shape {
        services: 50,
        endpoints: 3,
        nodes: 3,
    });
    c.config.counters = true;
    let mut inc = Incremental::new(c.clone(), compile(&c));
    let mut model = compile(&c);
    let counter_ops = |tx: &Transaction| -> Vec<(usize, String, Vec<String>)> {
        tx.ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::AddCounters { names, .. } => Some((i, "add".into(), names.clone())),
                Op::DeleteCounters { names, .. } => Some((i, "delete".into(), names.clone())),
                _ => None,
            })
            .collect()
    };
    let svc = c.services[7].clone();
    let mut step = |inc: &mut Incremental, ch: Change| {
        let tx = inc.update(&[ch]).expect("incremental");
        model = crate::diff::apply(&model, &tx).expect("the kernel would accept it");
        assert_eq!(canonical(&model), canonical(&inc.expected()));
        assert_only_leftovers(inc, "counters");
        tx
    };
    // An endpoint less: the counters are left alone.
    let mut fewer = svc.clone();
    fewer.endpoints.pop();
    let tx = step(&mut inc, Change::Upsert(fewer));
    assert!(counter_ops(&tx).is_empty(), "{:#?}", tx.ops);
    // The service goes: its counters go, after the elements naming them.
    let tx = step(
        &mut inc,
        Change::Remove {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
        },
    );
    let ops = counter_ops(&tx);
    assert_eq!(ops.len(), 1, "{:#?}", tx.ops);
    assert_eq!(ops[0].1, "delete");
    assert_eq!(ops[0].2.len(), 2 * svc.ports.len());
    assert!(ops[0]
        .2
        .iter()
        .all(|n| n.contains(&format!("/{}/", svc.name))));
    let last_element_delete = tx
        .ops
        .iter()
        .rposition(|op| matches!(op, Op::DeleteElements { .. }))
        .unwrap();
    assert!(ops[0].0 > last_element_delete);
    // It comes back: its counters come first, at zero.
    let tx = step(&mut inc, Change::Upsert(svc.clone()));
    let ops = counter_ops(&tx);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].1, "add");
    let first_element_add = tx
        .ops
        .iter()
        .position(|op| matches!(op, Op::AddElements { .. }))
        .unwrap();
    assert!(ops[0].0 < first_element_add);
}

#[test]
fn capacity_an_update_past_a_sets_size_is_refused() {
    let c = synth::one_service(100); // 100 endpoint elements, size 256
    let mut inc = Incremental::new(c.clone(), compile(&c));
    let upsert = |n: usize| Change::Upsert(synth::one_service(n).services[0].clone());

    // Up to the size: element by element.
    let tx = inc.update(&[upsert(256)]).expect("fits in 256");
    assert!(crate::diff::apply(&compile(&c), &tx).is_ok());
    // One more than the size: the kernel would refuse it, so the update is refused and
    // nothing changes.
    let before = inc.expected();
    let Err(Refused(why)) = inc.update(&[upsert(257)]) else {
        panic!("257 elements accepted in a set of size 256");
    };
    assert!(
        why.contains("set endpoints would hold 257 elements, more than its size 256"),
        "{why}"
    );
    assert_eq!(canonical(&inc.expected()), canonical(&before));
    // Replacing endpoints one for one needs no room.
    let mut moved = synth::one_service(256).services[0].clone();
    moved.endpoints[0].address = "10.201.0.1".parse().unwrap();
    inc.update(&[Change::Upsert(moved)])
        .expect("a replaced endpoint fits");
}

#[test]
fn holdings_judge_state_read_back_from_the_kernel() {
    use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
    use crate::ir::Protocol;
    use crate::model::{Element, ElementData, Value};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let sticky = ServiceBuilder::new("d", "sticky", ip("10.96.0.1"))
        .node_port("p", Protocol::Udp, 53, 30053)
        .session_affinity(600)
        .endpoint(ip("10.244.1.1"), Some("n1"), &[("p", 5353)])
        .build();
    let mut plain = ServiceBuilder::new("d", "plain", ip("10.96.0.2"))
        .port("p", Protocol::Udp, 53)
        .endpoint(ip("10.244.1.2"), Some("n1"), &[("p", 5353)])
        .endpoint(ip("10.244.1.3"), Some("n1"), &[("p", 5353)])
        .endpoint(ip("10.244.1.4"), Some("n1"), &[("p", 5353)])
        .build();
    // .3 is terminating but still serving (the maps hold only ready .2), .4 serves no more.
    plain.endpoints[1].ready = false;
    plain.endpoints[1].terminating = true;
    plain.endpoints[2].ready = false;
    plain.endpoints[2].serving = false;
    plain.endpoints[2].terminating = true;
    let cluster = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(sticky)
        .service(plain)
        .build();
    let table = &crate::compile(&cluster).unwrap().tables[0];
    let h = Holdings::of(table);
    let entry = |client: &str, addr: &str, port: u16, ep: &str| Element {
        key: vec![
            Value::Addr(ip(client)),
            Value::Addr(ip(addr)),
            Value::Proto(Protocol::Udp),
            Value::Port(port),
        ],
        data: Some(ElementData::Values(vec![
            Value::Addr(ip(ep)),
            Value::Port(5353),
        ])),
        comment: None,
    };
    // Affinity: the endpoint the frontend holds stays; a removed one, a frontend without
    // affinity and one that is gone do not.
    assert!(!h.stale_affinity(&entry("203.0.113.1", "10.96.0.1", 53, "10.244.1.1")));
    assert!(h.stale_affinity(&entry("203.0.113.1", "10.96.0.1", 53, "10.244.1.9")));
    assert!(h.stale_affinity(&entry("203.0.113.1", "10.96.0.2", 53, "10.244.1.2")));
    assert!(h.stale_affinity(&entry("203.0.113.1", "10.96.0.77", 53, "10.244.1.1")));
    // Through the node port, on the node's address.
    assert!(!h.stale_affinity(&entry("203.0.113.1", "192.168.0.1", 30053, "10.244.1.1")));
    assert!(h.stale_affinity(&entry("203.0.113.1", "192.168.0.1", 30053, "10.244.1.9")));
}

#[test]
fn udp_flows_stay_while_their_endpoint_serves() {
    use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
    use crate::ir::Protocol;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let mut plain = ServiceBuilder::new("d", "plain", ip("10.96.0.2"))
        .node_port("p", Protocol::Udp, 53, 30053)
        .endpoint(ip("10.244.1.2"), Some("n1"), &[("p", 5353)])
        .endpoint(ip("10.244.1.3"), Some("n1"), &[("p", 5353)])
        .endpoint(ip("10.244.1.4"), Some("n1"), &[("p", 5353)])
        .build();
    // .3 is terminating but still serving (the maps hold only ready .2), .4 serves no more.
    plain.endpoints[1].ready = false;
    plain.endpoints[1].terminating = true;
    plain.endpoints[2].ready = false;
    plain.endpoints[2].serving = false;
    plain.endpoints[2].terminating = true;
    let empty = ServiceBuilder::new("d", "empty", ip("10.96.0.3"))
        .port("p", Protocol::Udp, 53)
        .build();
    let tcp = ServiceBuilder::new("d", "tcp", ip("10.96.0.4"))
        .port("p", Protocol::Tcp, 53)
        .endpoint(ip("10.244.1.2"), Some("n1"), &[("p", 5353)])
        .build();
    let cluster = ClusterBuilder::new("n1", [ip("192.168.0.1"), ip("192.168.0.2")])
        .service(plain)
        .service(empty)
        .service(tcp)
        .build();
    let u = UdpServing::of_cluster(&cluster);
    let stale = |dst: &str, dport, src: &str, sport| u.stale(ip(dst), dport, ip(src), sport);
    // To a serving endpoint, chosen or not: stays.
    assert!(!stale("10.96.0.2", 53, "10.244.1.2", 5353));
    assert!(!stale("10.96.0.2", 53, "10.244.1.3", 5353));
    // To one that serves no more, another port, an unknown endpoint: goes.
    assert!(stale("10.96.0.2", 53, "10.244.1.4", 5353));
    assert!(stale("10.96.0.2", 53, "10.244.1.2", 5354));
    assert!(stale("10.96.0.2", 53, "10.244.1.9", 5353));
    // Not DNATed at all (began before the rules): goes, so the next datagram is.
    assert!(stale("10.96.0.2", 53, "10.96.0.2", 53));
    // The node port on the node's primary address (the default node-port addresses) only.
    assert!(!stale("192.168.0.1", 30053, "10.244.1.2", 5353));
    assert!(stale("192.168.0.1", 30053, "10.244.1.4", 5353));
    assert!(!stale("192.168.0.2", 30053, "10.244.1.4", 5353));
    assert!(!stale("203.0.113.7", 30053, "203.0.113.7", 30053));
    // No frontend, a frontend without endpoints, a TCP service's address: left alone.
    assert!(!stale("10.1.2.3", 53, "10.244.1.9", 5353));
    assert!(!stale("10.96.0.3", 53, "10.244.1.9", 5353));
    assert!(!stale("10.96.0.4", 53, "10.244.1.9", 5353));
    assert_eq!(u.families(), vec![crate::model::Family::Ipv4]);
    assert!(UdpServing::default().is_empty());
}

#[test]
fn udp_flows_of_a_terminating_endpoint_that_still_serves_are_kept() {
    use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
    use crate::ir::Protocol;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let cluster = |serving: bool| {
        let mut svc = ServiceBuilder::new("d", "dns", ip("10.96.0.2"))
            .port("p", Protocol::Udp, 53)
            .endpoint(ip("10.244.1.2"), Some("n1"), &[("p", 5353)])
            .endpoint(ip("10.244.1.3"), Some("n1"), &[("p", 5353)])
            .build();
        // .3 starts terminating: it leaves the maps (.2 is ready), serving or not.
        svc.endpoints[1].ready = false;
        svc.endpoints[1].terminating = true;
        svc.endpoints[1].serving = serving;
        ClusterBuilder::new("n1", [ip("192.168.0.1")])
            .service(svc)
            .build()
    };
    let mut both_ready = cluster(true);
    both_ready.services[0].endpoints[1].ready = true;
    both_ready.services[0].endpoints[1].terminating = false;
    let before_both = crate::compile(&both_ready).unwrap();
    for serving in [true, false] {
        let after = cluster(serving);
        let desired = crate::compile(&after).unwrap();
        let tx = crate::diff::diff(&before_both, &desired);
        let mut stale = stale_in(&tx, &desired);
        assert_eq!(stale.udp_flows.len(), 1, "{stale:?}");
        stale.keep_serving(&UdpServing::of_cluster(&after));
        assert_eq!(
            stale.udp_flows.is_empty(),
            serving,
            "serving {serving}: {stale:?}"
        );
    }
}

/// A terminating endpoint's flows were kept while it served; when it stops serving (or goes)
/// no transaction mentions it — it left the maps already — so the change of what serves finds
/// it (the `Syncer`'s update path).
#[test]
fn an_endpoint_that_stops_serving_after_leaving_the_maps_loses_its_flows() {
    use crate::ir::builder::ServiceBuilder;
    use crate::ir::Protocol;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let svc = |serving: Option<bool>| {
        let mut b = ServiceBuilder::new("d", "dns", ip("10.96.0.2"))
            .node_port("p", Protocol::Udp, 53, 30053)
            .endpoint(ip("10.244.1.2"), Some("n1"), &[("p", 5353)]);
        if serving.is_some() {
            b = b.endpoint(ip("10.244.1.3"), Some("n1"), &[("p", 5353)]);
        }
        let mut s = b.build();
        if let Some(serving) = serving {
            s.endpoints[1].ready = false;
            s.endpoints[1].terminating = true;
            s.endpoints[1].serving = serving;
        }
        s
    };
    let addrs = [ip("192.168.0.1")];
    let terminating = UdpServing::new([&svc(Some(true))], addrs);
    for after in [Some(false), None] {
        let after_svc = svc(after);
        let now = UdpServing::new([&after_svc], addrs);
        let mut stale = Stale::default();
        stale.add_lost_udp(&terminating, &now);
        stale.keep_serving(&now);
        let mut lost: Vec<(String, String)> = stale
            .udp_flows
            .iter()
            .map(|s| (format!("{:?}", s.frontend), format!("{:?}", s.endpoint)))
            .collect();
        lost.sort();
        // The cluster IP and the node port, each to .3.
        assert_eq!(lost.len(), 2, "{after:?}: {lost:?}");
        assert!(
            lost.iter().all(|(_, ep)| ep.contains("10.244.1.3")),
            "{lost:?}"
        );
    }
    // The service removed: every endpoint of both frontends.
    let mut stale = Stale::default();
    stale.add_lost_udp(&terminating, &UdpServing::default());
    assert_eq!(stale.udp_flows.len(), 4, "{stale:?}");
    // Nothing lost, nothing added.
    let mut stale = Stale::default();
    stale.add_lost_udp(&terminating, &terminating);
    assert!(stale.is_empty());
}
