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
                    Statement::VerdictMap { map, .. } | Statement::DnatMap { map, .. } => {
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
    for (set, n) in references(&large) {
        assert!(n <= 8, "{set} is referenced by {n} rules");
    }
    // ...while elements grow linearly: one dispatch element per frontend.
    let elems = |t: &Table, n: &str| t.set(n).unwrap().elements.len();
    assert_eq!(elems(&large, names::SERVICE_IPS), 5000 + 5000 / 20);
    assert_eq!(elems(&small, names::SERVICE_IPS), 200 + 200 / 20);
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
    assert_eq!(dispatch(&t)[0].1, Verdict::Drop);
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
    assert!(
        text[0].starts_with("ip saddr 10.244.0.0/16 goto endpoints-2"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("fib saddr type local meta mark set"),
        "{text:?}"
    );
    assert_eq!(text[3], "goto local-endpoints-1");
    // The external frontend has both lists: slots 0-1 and the local one at 32768.
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
    assert_eq!(slots, [0, 1, LOCAL_SLOT_OFFSET]);
}

#[test]
fn local_list_equal_to_cluster_list_shares_slots() {
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
        4,
        "two frontends × two endpoints, no local copies"
    );
    assert!(t.chains.iter().all(|c| !c.name.contains("local-endpoints")));
}

#[test]
fn affinity_is_skipped_for_a_single_endpoint() {
    let t = one(ServiceBuilder::new("d", "s", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .session_affinity(100)
        .endpoint(ip("10.244.0.1"), Some("n1"), &[("p", 8080)])
        .build());
    assert!(t.set(names::AFFINITY).is_none());
    let t = one(ServiceBuilder::new("d", "s", ip("10.96.0.1"))
        .port("p", Protocol::Tcp, 80)
        .session_affinity(100)
        .endpoint(ip("10.244.0.1"), Some("n1"), &[("p", 8080)])
        .endpoint(ip("10.244.0.2"), Some("n1"), &[("p", 8080)])
        .build());
    assert_eq!(t.set(names::AFFINITY).unwrap().timeout, Some(86400));
    assert!(t.chain("affinity-100s").is_some());
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
    // cluster-ip-masq-2 and external-masq-2 have the same body: one survives.
    let masq2: Vec<&str> = t
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| n.ends_with("masq-2") && !n.starts_with("nodeport"))
        .collect();
    assert_eq!(masq2.len(), 1, "{masq2:?}");
}

#[test]
fn ipv6_frontends_have_no_affinity_machinery() {
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
    assert!(t.set(names::AFFINITY).is_none());
    assert_eq!(crate::validate::warnings(&c).len(), 1);
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
    for (set, n) in references(&t) {
        assert!(n <= 8, "{set} is referenced by {n} rules");
    }
    // Every frontend's elements are in the shard its behaviour chain selects from.
    let mut rs = Ruleset { tables: vec![t] };
    crate::optimize::run(&mut rs);
    assert!(crate::emit::text::write_string(&rs).contains("map @endpoints-shard1"));
}
