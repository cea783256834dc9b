use super::*;
use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
use crate::synth::{cluster, Shape};
use crate::validate::validate;

fn compile(c: &Cluster) -> Table {
    let mut rs = lower(validate(c).unwrap());
    crate::optimize::run(&mut rs);
    rs.tables.remove(0)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// How many rules reference each named set or map.
fn references(t: &Table) -> BTreeMap<String, usize> {
    let mut refs = BTreeMap::new();
    for chain in &t.chains {
        for rule in &chain.rules {
            for m in &rule.matches {
                if let Match::Lookup {
                    set: SetRef::Named(n),
                    ..
                } = m
                {
                    *refs.entry(n.clone()).or_default() += 1;
                }
            }
            for s in &rule.statements {
                match s {
                    Statement::VerdictMap { map, .. }
                    | Statement::DnatMap { map, .. }
                    | Statement::CounterMap { map, .. } => {
                        *refs.entry(map.clone()).or_default() += 1
                    }
                    Statement::UpdateMap { set, .. } => *refs.entry(set.clone()).or_default() += 1,
                    _ => {}
                }
            }
        }
    }
    refs
}

#[test]
fn sets_chains_and_references_do_not_grow_with_services() {
    let small = compile(&cluster(Shape {
        services: 200,
        endpoints: 5,
        nodes: 10,
    }));
    let large = compile(&cluster(Shape {
        services: 5000,
        endpoints: 5,
        nodes: 10,
    }));
    assert_eq!(small.sets.len(), large.sets.len());
    assert_eq!(small.chains.len(), large.chains.len());
    assert_eq!(references(&small), references(&large));
    assert_references_bounded(&large);
    // ...while elements grow linearly: one dispatch element per frontend.
    let elems = |t: &Table, n: &str| t.set(n).unwrap().elements.len();
    assert_eq!(elems(&large, names::SERVICE_IPS), 5000 + 5000 / 20);
    assert_eq!(elems(&small, names::SERVICE_IPS), 200 + 200 / 20);
}

/// Fixed maps and sets are referenced by a few rules; an endpoint map by the draws of the
/// selection chains that read it (one per capacity class and list in use).
fn assert_references_bounded(t: &Table) {
    for (set, n) in references(t) {
        let bound =
            if set.starts_with(names::ENDPOINTS) || set.starts_with(names::NODEPORT_ENDPOINTS) {
                4 * (SELECTION_DRAWS + 1)
            } else {
                8
            };
        assert!(n <= bound, "{set} is referenced by {n} rules");
    }
}

fn one(svc: Service) -> Table {
    compile(
        &ClusterBuilder::new("n1", [ip("192.168.0.1")])
            .cluster_cidr("10.244.0.0/16".parse().unwrap())
            .service(svc)
            .build(),
    )
}

fn dispatch(t: &Table) -> Vec<(String, Verdict)> {
    t.set(names::SERVICE_IPS)
        .unwrap()
        .elements
        .iter()
        .map(|e| {
            let Some(ElementData::Verdict(v)) = &e.data else {
                panic!()
            };
            (e.comment.clone().unwrap_or_default(), v.clone())
        })
        .collect()
}

#[test]
fn no_endpoints_rejects_and_local_policy_without_local_endpoint_drops() {
    let t = one(ServiceBuilder::new("d", "empty", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .build());
    assert_eq!(dispatch(&t)[0].1, Verdict::Goto(names::REJECT_CHAIN.into()));
    assert!(t.chain(names::REJECT_CHAIN).is_some());

    let t = one(ServiceBuilder::new("d", "itp", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .internal_traffic_policy(TrafficPolicy::Local)
        .endpoint(ip("10.244.1.1"), Some("n2"), &[("p", 8080)])
        .build());
    // The local selection finds no slot and ends in drop.
    let rs = Ruleset { tables: vec![t] };
    let packet = crate::trace::Packet {
        proto: Protocol::Tcp,
        src: ip("10.244.0.9"),
        src_port: 40000,
        dst: ip("10.96.0.1"),
        dst_port: 80,
        origin: crate::trace::Origin::Pod,
    };
    let trace = crate::trace::trace(&rs, &[ip("192.168.0.1")], &packet).unwrap();
    assert_eq!(trace.verdict_line(), "verdict: drop");
    assert!(trace.branches[0]
        .steps
        .last()
        .unwrap()
        .starts_with("local-endpoints-8: drop"));
}

#[test]
fn external_local_policy_routes_by_source() {
    let t = one(ServiceBuilder::new("d", "lb", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .load_balancer_ip(ip("203.0.113.1"))
        .external_traffic_policy(TrafficPolicy::Local)
        .endpoint(ip("10.244.1.1"), Some("n2"), &[("p", 8080)])
        .endpoint(ip("10.244.0.1"), Some("n1"), &[("p", 8080)])
        .build());
    let lb = dispatch(&t)
        .into_iter()
        .find(|(c, _)| c.ends_with("external"))
        .unwrap()
        .1;
    let chain = t.chain(lb.target().unwrap()).unwrap();
    let text: Vec<String> = chain
        .rules
        .iter()
        .map(|r| {
            let mut s = String::new();
            crate::emit::text::write_rule(&mut s, r);
            s
        })
        .collect();
    // The node's own traffic is marked first (before any affinity lookup could DNAT it).
    assert!(
        text[0].starts_with("fib saddr type local meta mark set"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("ip saddr 10.244.0.0/16 goto endpoints-8"),
        "{text:?}"
    );
    assert!(
        text[2].starts_with("fib saddr type local goto endpoints-8"),
        "{text:?}"
    );
    assert_eq!(text[3], "goto local-endpoints-8");
    // The external frontend has both lists, each repeated to fill half of its capacity of
    // 8: slots 0-3 (two endpoints, twice) and the local one at 32768 (one endpoint, 4 times).
    let slots: Vec<u32> = t
        .set(names::ENDPOINTS)
        .unwrap()
        .elements
        .iter()
        .filter(|e| e.key[0] == Value::Addr(ip("203.0.113.1")))
        .map(|e| match e.key[3] {
            Value::Integer(i) => i,
            _ => panic!(),
        })
        .collect();
    let local = LOCAL_SLOT_OFFSET;
    assert_eq!(slots, [0, 1, 2, 3, local, local + 1, local + 2, local + 3]);
}

#[test]
fn local_list_has_its_own_slots_even_when_equal_to_the_cluster_list() {
    // Sharing would save elements but make losing the first remote endpoint re-point the
    // frontend to another chain.
    let t = one(ServiceBuilder::new("d", "lb", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .load_balancer_ip(ip("203.0.113.1"))
        .external_traffic_policy(TrafficPolicy::Local)
        .endpoint(ip("10.244.0.1"), Some("n1"), &[("p", 8080)])
        .endpoint(ip("10.244.0.2"), Some("n1"), &[("p", 8080)])
        .build());
    let eps = &t.set(names::ENDPOINTS).unwrap().elements;
    assert_eq!(
        eps.len(),
        12,
        "two frontends × two endpoints in 4 slots, and the load balancer's local copies"
    );
    assert!(t.chain("local-endpoints-8").is_some());
}

#[test]
fn affinity_applies_to_a_single_endpoint_too() {
    // So that scaling from one endpoint to two does not change the frontend's chain.
    let single = one(ServiceBuilder::new("d", "s", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .session_affinity(100)
        .endpoint(ip("10.244.0.1"), Some("n1"), &[("p", 8080)])
        .build());
    let t = one(ServiceBuilder::new("d", "s", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .session_affinity(100)
        .endpoint(ip("10.244.0.1"), Some("n1"), &[("p", 8080)])
        .endpoint(ip("10.244.0.2"), Some("n1"), &[("p", 8080)])
        .build());
    assert_eq!(t.set(names::AFFINITY).unwrap().timeout, Some(86400));
    assert!(t.chain("affinity-100s").is_some());
    assert_eq!(dispatch(&single), dispatch(&t));
}

#[test]
fn weighted_slots_are_proportional_dense_and_half_full() {
    let mut r = crate::synth::Rng::new(7);
    for case in 0..300 {
        let n = 1 + r.below(12) as usize;
        let weights: Vec<u32> = (0..n).map(|_| 1 + r.below(20) as u32).collect();
        let total: usize = weights.iter().map(|w| *w as usize).sum();
        let capacity = slot_capacity(total) as usize;
        let slots: Vec<(u32, usize)> = slots(&weights).collect();
        assert!(
            slots.len() * 2 >= capacity && slots.len() <= capacity,
            "{case}: {weights:?}"
        );
        assert!(slots.iter().enumerate().all(|(i, (s, _))| *s as usize == i));
        let mut per = vec![0u32; n];
        for (_, e) in &slots {
            per[*e] += 1;
        }
        // Every endpoint holds the same number of copies of its weight.
        let copies = per[0] / weights[0];
        assert!(copies >= 1);
        assert!(
            per.iter().zip(&weights).all(|(p, w)| *p == copies * w),
            "{case}: {weights:?} → {per:?}"
        );
    }
    // 1:3 — a quarter of the slots for the first endpoint.
    let s: Vec<usize> = slots(&[1, 3]).map(|(_, e)| e).collect();
    assert_eq!(s, [0, 1, 1, 1]);
}

#[test]
fn slots_fill_half_the_capacity_evenly() {
    for len in 1..=100 {
        let capacity = slot_capacity(len) as usize;
        let slots: Vec<(u32, usize)> = slots(&vec![1; len]).collect();
        assert!(
            slots.len() * 2 >= capacity && slots.len() <= capacity,
            "{len}"
        );
        // Dense from 0 (the fallback draw reads slot 0), and every endpoint equally often.
        assert!(slots.iter().enumerate().all(|(i, (s, _))| *s as usize == i));
        let mut per = vec![0; len];
        for (_, e) in &slots {
            per[*e] += 1;
        }
        assert!(per.iter().all(|&c| c == per[0]), "{len}: {per:?}");
    }
    for len in 0..=100 {
        assert_eq!(slots_filled(len), slots(&vec![1; len]).count(), "{len}");
    }
    assert_eq!(slot_capacity(1), MIN_SLOT_CAPACITY);
    assert_eq!(slot_capacity(8), 8);
    assert_eq!(slot_capacity(9), 16);
    assert_eq!(
        slot_capacity(crate::validate::MAX_ENDPOINTS),
        LOCAL_SLOT_OFFSET
    );
}

#[test]
fn scaling_within_a_capacity_class_changes_endpoint_elements_only() {
    let with = |n: usize| {
        let mut b = ServiceBuilder::new("d", "s", ip("10.96.0.1"))
            .node_port("p", Protocol::Tcp, 80, 30080)
            .load_balancer_ip(ip("203.0.113.1"))
            .external_traffic_policy(TrafficPolicy::Local)
            .session_affinity(100);
        for i in 0..n {
            let node = if i % 2 == 0 { "n1" } else { "n2" };
            b = b.endpoint(
                ip(&format!("10.244.0.{}", i + 1)),
                Some(node),
                &[("p", 8080)],
            );
        }
        one(b.build())
    };
    for n in 1..8 {
        let (a, b) = (with(n), with(n + 1));
        assert_eq!(a.chains, b.chains, "{n} → {}", n + 1);
        for set in &a.sets {
            if !set.name.contains("endpoints") && set.name != names::HAIRPIN {
                assert_eq!(Some(set), b.set(&set.name), "{n} → {}", n + 1);
            }
        }
    }
    assert_ne!(with(8).chains, with(9).chains);
}

#[test]
fn masquerade_only_sets_and_clears_its_own_bit() {
    let mut c = cluster(Shape {
        services: 50,
        endpoints: 3,
        nodes: 3,
    });
    c.config.masquerade_bit = 3;
    let t = compile(&c);
    for chain in &t.chains {
        for rule in &chain.rules {
            for s in &rule.statements {
                if let Statement::MarkOr(b) | Statement::MarkXor(b) = s {
                    assert_eq!(*b, 0x8);
                }
            }
        }
    }
}

#[test]
fn identical_behaviour_chains_merge_under_masquerade_all() {
    let mut c = cluster(Shape {
        services: 40,
        endpoints: 2,
        nodes: 2,
    });
    c.config.masquerade_all = true;
    let t = compile(&c);
    // cluster-ip-masq-8 and external-masq-8 have the same body: one survives.
    let masq2: Vec<&str> = t
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| n.ends_with("masq-8") && !n.starts_with("nodeport"))
        .collect();
    assert_eq!(masq2.len(), 1, "{masq2:?}");
}

#[test]
fn ipv6_frontends_have_affinity_keyed_by_client_and_frontend() {
    let svc = ServiceBuilder::new("d", "s", ip("fd00::1"))
        .port("p", Protocol::Tcp, 80)
        .session_affinity(100)
        .endpoint(ip("fd00:1::1"), Some("n1"), &[("p", 8080)])
        .endpoint(ip("fd00:1::2"), Some("n1"), &[("p", 8080)])
        .build();
    let c = ClusterBuilder::new("n1", [ip("fd00::10")])
        .service(svc)
        .build();
    let t = compile(&c);
    assert_eq!(t.family, Family::Ipv6);
    let aff = t.set(names::AFFINITY).expect("an affinity map");
    assert_eq!(
        aff.key,
        vec![
            FieldType::Ipv6Addr,
            FieldType::Ipv6Addr,
            FieldType::InetProto,
            FieldType::InetService
        ]
    );
    assert!(t.set(names::AFFINITY_SERVICES).is_some());
}

#[test]
fn large_endpoint_maps_are_sharded_and_stay_bounded() {
    let t = compile(&cluster(Shape {
        services: 3000,
        endpoints: 20,
        nodes: 10,
    }));
    let shards: Vec<&Set> = t
        .sets
        .iter()
        .filter(|s| s.name.starts_with("endpoints-shard"))
        .collect();
    assert_eq!(
        shards.len(),
        2,
        "{:?}",
        t.sets.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let total: usize = shards.iter().map(|s| s.elements.len()).sum();
    for s in &shards {
        // Balanced by the hash, and each well under what dumps slowly.
        assert!(
            s.elements.len() < SHARD_ELEMENTS + SHARD_ELEMENTS / 4,
            "{} has {}",
            s.name,
            s.elements.len()
        );
        assert!(s.elements.len() * 3 > total, "unbalanced shards");
    }
    assert_references_bounded(&t);
    // Every frontend's elements are in the shard its behaviour chain selects from.
    let mut rs = Ruleset { tables: vec![t] };
    crate::optimize::run(&mut rs);
    assert!(crate::emit::text::write_string(&rs).contains("map @endpoints-shard1"));
}

#[test]
fn chain_and_set_names_are_unique_and_references_resolve() {
    for seed in 0..150 {
        let rs = crate::compile(&crate::synth::random(seed, 15)).unwrap();
        for t in &rs.tables {
            let mut names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(names.len(), before, "seed {seed}: a chain name twice");
            // …and every chain a rule or a verdict-map element names exists.
            let targets = t
                .chains
                .iter()
                .flat_map(|c| c.rules.iter().flat_map(|r| r.jump_targets()))
                .chain(t.sets.iter().flat_map(|s| {
                    s.elements.iter().filter_map(|e| match &e.data {
                        Some(ElementData::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) => {
                            Some(c.as_str())
                        }
                        _ => None,
                    })
                }));
            for target in targets {
                assert!(t.chain(target).is_some(), "seed {seed}: no chain {target}");
            }
            let mut sets: Vec<&str> = t.sets.iter().map(|s| s.name.as_str()).collect();
            sets.sort_unstable();
            let before = sets.len();
            sets.dedup();
            assert_eq!(sets.len(), before, "seed {seed}: a set name twice");
        }
    }
}

#[test]
fn counters_name_every_frontend_two_per_port_without_growing_rules() {
    let counted = |services| {
        let mut c = cluster(Shape {
            services,
            endpoints: 5,
            nodes: 10,
        });
        c.config.counters = true;
        (compile(&c), c)
    };
    let ((small, _), (large, c)) = (counted(200), counted(2000));
    assert_eq!(small.sets.len(), large.sets.len());
    assert_eq!(small.chains.len(), large.chains.len());
    assert_eq!(references(&small), references(&large));
    assert_references_bounded(&large);
    let keys = |n: &str| -> BTreeSet<Vec<Value>> {
        large
            .set(n)
            .unwrap()
            .elements
            .iter()
            .map(|e| e.key.clone())
            .collect()
    };
    let mut named = BTreeSet::new();
    for (dispatch, traffic, connections) in [
        (
            names::SERVICE_IPS,
            names::SERVICE_TRAFFIC,
            names::SERVICE_CONNECTIONS,
        ),
        (
            names::SERVICE_NODEPORTS,
            names::NODEPORT_TRAFFIC,
            names::NODEPORT_CONNECTIONS,
        ),
    ] {
        // Every frontend has one counter of each kind, of the port its dispatch names.
        assert_eq!(keys(dispatch), keys(traffic));
        assert_eq!(keys(dispatch), keys(connections));
        let port_of: BTreeMap<&Vec<Value>, &str> = large
            .set(dispatch)
            .unwrap()
            .elements
            .iter()
            .map(|e| {
                (
                    &e.key,
                    e.comment.as_deref().unwrap().split(' ').next().unwrap(),
                )
            })
            .collect();
        for (map, kind) in [
            (traffic, counters::CounterKind::Traffic),
            (connections, counters::CounterKind::Connections),
        ] {
            for e in &large.set(map).unwrap().elements {
                let Some(ElementData::Counter(name)) = &e.data else {
                    panic!("{map} holds {:?}", e.data)
                };
                let (k, port) = counters::parse(name).expect("a counter name");
                assert_eq!(k, kind);
                assert!(port.to_string().starts_with(port_of[&e.key]), "{name}");
                named.insert(name.clone());
            }
        }
    }
    // The table holds exactly the counters its maps name: two per service port.
    assert_eq!(named, large.counters.iter().cloned().collect());
    let ports: usize = c.services.iter().map(|s| s.ports.len()).sum();
    assert_eq!(large.counters.len(), 2 * ports);

    // Off by default: no counter, counter map or counting chain at all.
    let plain = compile(&cluster(Shape {
        services: 200,
        endpoints: 5,
        nodes: 10,
    }));
    assert!(plain.counters.is_empty());
    assert!(plain.sets.iter().all(|s| s.data != Some(SetData::Counter)));
    assert!(plain.chain(names::COUNT_TRAFFIC_CHAIN).is_none());
    let names_of = |t: &Table| {
        t.chains
            .iter()
            .map(|c| c.name.clone())
            .collect::<BTreeSet<_>>()
    };
    let extra: Vec<String> = names_of(&small)
        .difference(&names_of(&plain))
        .cloned()
        .collect();
    assert_eq!(
        extra,
        ["count-traffic", "counters-output", "counters-prerouting"]
    );
}
