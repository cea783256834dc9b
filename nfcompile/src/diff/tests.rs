use super::*;
use crate::ir::builder::ServiceBuilder;
use crate::ir::{Cluster, Protocol};
use crate::synth::{random, Rng};

fn compile(c: &Cluster) -> Ruleset {
    crate::compile(c).unwrap()
}

fn check(a: &Ruleset, b: &Ruleset, what: &str) -> Transaction {
    let tx = diff(a, b);
    let got =
        apply(a, &tx).unwrap_or_else(|e| panic!("{what}: the transaction is not applicable: {e}"));
    assert_eq!(
        canonical(&got),
        canonical(b),
        "{what}: apply(a, diff(a, b)) != b"
    );
    tx
}

/// A random edit of a cluster: services added, removed, endpoints moved, policies flipped.
fn mutate(c: &Cluster, seed: u64) -> Cluster {
    let mut r = Rng::new(seed);
    let mut c = c.clone();
    let donor = random(seed ^ 0xabcdef, 10);
    for _ in 0..=r.below(4) {
        match r.below(6) {
            0 if !c.services.is_empty() => {
                let i = r.below(c.services.len() as u64) as usize;
                c.services.remove(i);
            }
            1 if !c.services.is_empty() => {
                let i = r.below(c.services.len() as u64) as usize;
                c.services[i].endpoints.pop();
            }
            2 if !c.services.is_empty() => {
                let i = r.below(c.services.len() as u64) as usize;
                let s = &mut c.services[i];
                s.external_traffic_policy = match s.external_traffic_policy {
                    crate::ir::TrafficPolicy::Cluster => crate::ir::TrafficPolicy::Local,
                    _ => crate::ir::TrafficPolicy::Cluster,
                };
            }
            3 if !c.services.is_empty() => {
                let i = r.below(c.services.len() as u64) as usize;
                c.services[i].session_affinity_timeout =
                    match c.services[i].session_affinity_timeout {
                        None => Some(300),
                        Some(_) => None,
                    };
            }
            4 => c.config.masquerade_all = !c.config.masquerade_all,
            _ => {
                // A service from another cluster, renamed so it cannot collide.
                if let Some(mut s) = donor.services.get(r.below(10) as usize).cloned() {
                    s.name = format!("donor-{}", r.below(1000));
                    let clash = crate::validate::validate(&Cluster {
                        services: c.services.iter().cloned().chain([s.clone()]).collect(),
                        ..c.clone()
                    })
                    .is_err();
                    if !clash {
                        c.services.push(s);
                    }
                }
            }
        }
    }
    c
}

#[test]
fn diff_of_a_ruleset_with_itself_is_empty() {
    for seed in 0..20 {
        let a = compile(&random(seed, 20));
        assert!(diff(&a, &a).is_empty(), "seed {seed}");
    }
}

#[test]
fn applying_the_diff_gives_the_desired_ruleset() {
    for seed in 0..150 {
        let a = random(seed, 20);
        let b = mutate(&a, seed);
        check(&compile(&a), &compile(&b), &format!("seed {seed}"));
        // and back, and from/to nothing
        check(&compile(&b), &compile(&a), &format!("seed {seed} reversed"));
    }
    let a = compile(&random(3, 10));
    check(&Ruleset::default(), &a, "from empty");
    check(&a, &Ruleset::default(), "to empty");
}

#[test]
fn unrelated_clusters_diff_correctly() {
    for seed in 0..40 {
        check(
            &compile(&random(seed, 15)),
            &compile(&random(seed + 1000, 15)),
            &format!("seed {seed}"),
        );
    }
}

fn with_service(c: &Cluster, endpoints: usize) -> Cluster {
    let mut c = c.clone();
    let mut s = ServiceBuilder::new("default", "new", "10.111.0.1".parse().unwrap()).port(
        "http",
        Protocol::Tcp,
        80,
    );
    for e in 0..endpoints {
        s = s.endpoint(
            format!("10.200.0.{}", e + 1).parse().unwrap(),
            Some("node-2"),
            &[("http", 8080)],
        );
    }
    c.services.push(s.build());
    c
}

fn kinds(tx: &Transaction) -> Vec<String> {
    tx.ops
        .iter()
        .map(|o| format!("{o:?}").chars().take(100).collect())
        .collect()
}

/// kube-proxy's partial sync is the bar: adding a service with one endpoint costs it 10
/// operations, deleting one 4, a no-op 0.
#[test]
fn small_changes_cost_fewer_operations_than_kube_proxy() {
    let base = crate::synth::cluster(crate::synth::Shape {
        services: 200,
        endpoints: 3,
        nodes: 3,
    });
    let a = compile(&base);
    assert!(diff(&a, &a).is_empty());

    // A service like the others: only elements (service-ips, cluster-ips, endpoints).
    let b = compile(&with_service(&base, 3));
    let add = check(&a, &b, "add");
    assert_eq!(add.ops.len(), 3, "{:#?}", kinds(&add));
    let del = check(&b, &a, "delete");
    assert_eq!(del.ops.len(), 3, "{:#?}", kinds(&del));

    // The first service with one endpoint also brings its two shared chains (and takes them
    // when it goes): still under kube-proxy's 10 to add, one over its 4 to delete.
    let b = compile(&with_service(&base, 1));
    let add = check(&a, &b, "add");
    assert!(add.ops.len() <= 10, "{:#?}", kinds(&add));
    let del = check(&b, &a, "delete");
    assert!(del.ops.len() <= 5, "{:#?}", kinds(&del));

    // One endpoint less where that endpoint count already exists elsewhere: only that
    // service's elements change, in 4 operations.
    let mut mixed = base.clone();
    mixed.services[3].endpoints.truncate(2);
    let a = compile(&mixed);
    let mut c = mixed.clone();
    c.services[7].endpoints.remove(1);
    let tx = check(&a, &compile(&c), "one endpoint");
    assert!(tx.ops.len() <= 4, "{:#?}", kinds(&tx));
    for op in &tx.ops {
        if let Op::AddElements { elements, .. } | Op::DeleteElements { elements, .. } = op {
            for e in elements {
                // every element touched belongs to svc-7's frontend (cluster IP 10.96.0.8)
                assert!(
                    e.key
                        .contains(&crate::model::Value::Addr("10.96.0.8".parse().unwrap())),
                    "{e:?}"
                );
            }
        }
    }
}

#[test]
fn plans_describe_services() {
    let base = crate::synth::cluster(crate::synth::Shape {
        services: 5,
        endpoints: 3,
        nodes: 3,
    });
    let mut c = base.clone();
    c.services[1].endpoints.remove(0);
    c.services.remove(2);
    let (a, b) = (compile(&base), compile(&c));
    let changes = describe::describe(&a, &b, &diff(&a, &b));
    let lines: Vec<String> = changes
        .iter()
        .map(|c| format!("{:?} {} {:?}", c.kind, c.service, c.details))
        .collect();
    assert_eq!(changes.len(), 2, "{lines:#?}");
    assert_eq!(changes[0].service, "default/svc-1");
    assert_eq!(changes[0].kind, describe::ChangeKind::Change);
    assert!(
        changes[0].details[0].starts_with("port 80/TCP: endpoints 3 → 2 (−10.128.0.4:8080"),
        "{lines:#?}"
    );
    assert_eq!(changes[1].kind, describe::ChangeKind::Destroy);
    let empty = Ruleset::default();
    let added = describe::describe(&empty, &a, &diff(&empty, &a));
    assert_eq!(added.len(), 5);
    assert_eq!(added[0].details[0], "port 80/TCP → 3 endpoints");
}

fn endpoints_set(rs: &Ruleset) -> &Set {
    rs.tables[0].set(crate::layout::names::ENDPOINTS).unwrap()
}

#[test]
fn a_full_sync_keeps_a_sets_size_while_its_elements_fit() {
    let live = compile(&crate::synth::one_service(300)); // 300 + 37 → 512
    assert_eq!(endpoints_set(&live).size, Some(512));

    // Fewer endpoints want 256; the live 512 still fits and is not 4× too big: kept, so the
    // diff touches elements only.
    let mut fewer = compile(&crate::synth::one_service(200));
    assert_eq!(endpoints_set(&fewer).size, Some(256));
    assert!(keep_capacities(&live, &mut fewer) >= 1);
    assert_eq!(endpoints_set(&fewer).size, Some(512));
    let tx = check(&live, &fewer, "fewer endpoints");
    assert!(
        !tx.ops
            .iter()
            .any(|op| matches!(op, Op::DeleteSet { .. } | Op::AddSet { .. })),
        "{:#?}",
        kinds(&tx)
    );

    // More than the live size holds: the set gets its own, bigger size and is recreated.
    let mut more = compile(&crate::synth::one_service(600));
    keep_capacities(&live, &mut more);
    assert_eq!(endpoints_set(&more).size, Some(1024));
    let tx = check(&live, &more, "more endpoints");
    assert!(tx.ops.iter().any(
        |op| matches!(op, Op::DeleteSet { set, .. } if set == crate::layout::names::ENDPOINTS)
    ));

    // A set more than 4× the size it needs shrinks.
    let big = compile(&crate::synth::one_service(1200)); // 2048 > 4 × 256
    let mut small = compile(&crate::synth::one_service(3));
    keep_capacities(&big, &mut small);
    assert_eq!(endpoints_set(&small).size, Some(256));
}

#[test]
fn the_model_refuses_elements_past_a_sets_size_like_the_kernel() {
    let a = compile(&crate::synth::one_service(100));
    let mut b = compile(&crate::synth::one_service(300));
    // As if the size had been kept although the elements no longer fit.
    let size = endpoints_set(&a).size;
    b.tables[0]
        .sets
        .iter_mut()
        .find(|s| s.name == crate::layout::names::ENDPOINTS)
        .unwrap()
        .size = size;
    let Err(err) = apply(&a, &diff(&a, &b)) else {
        panic!("300 elements in a set of size 256 applied");
    };
    assert!(
        err.contains("set endpoints is full: 300 elements, size 256"),
        "{err}"
    );
}

#[test]
fn plans_say_how_many_endpoints_a_local_policy_reaches() {
    use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
    use crate::ir::{Protocol, TrafficPolicy};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let cluster = |local_here: bool| {
        let mut svc = ServiceBuilder::new("default", "web", ip("10.96.0.10"))
            .port("http", Protocol::Tcp, 80)
            .load_balancer_ip(ip("10.123.123.100"))
            .external_traffic_policy(TrafficPolicy::Local);
        if local_here {
            svc = svc.endpoint(ip("10.244.1.5"), Some("node-a"), &[("http", 8080)]);
        }
        for e in ["10.244.2.5", "10.244.2.6"] {
            svc = svc.endpoint(ip(e), Some("node-b"), &[("http", 8080)]);
        }
        let itp = ServiceBuilder::new("default", "itp", ip("10.96.0.11"))
            .port("http", Protocol::Tcp, 80)
            .internal_traffic_policy(TrafficPolicy::Local)
            .endpoint(ip("10.244.1.7"), Some("node-a"), &[("http", 8080)])
            .endpoint(ip("10.244.2.7"), Some("node-b"), &[("http", 8080)])
            .build();
        ClusterBuilder::new("node-a", [ip("192.168.1.10")])
            .cluster_cidr("10.244.0.0/16".parse().unwrap())
            .service(svc.build())
            .service(itp)
            .build()
    };
    let (before, after) = (compile(&cluster(true)), compile(&cluster(false)));
    let empty = Ruleset::default();
    let added = describe::describe(&empty, &before, &diff(&empty, &before));
    let lines: Vec<&String> = added.iter().flat_map(|c| &c.details).collect();
    assert!(
        lines.contains(&&"port 80/TCP → 1 local endpoint".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&&"external 10.123.123.100:80/TCP → 3 endpoints (1 local)".to_string()),
        "{lines:#?}"
    );
    let changed = describe::describe(&before, &after, &diff(&before, &after));
    let lines: Vec<&String> = changed.iter().flat_map(|c| &c.details).collect();
    assert!(
        lines.contains(
            &&"external 10.123.123.100:80/TCP: endpoints 3 → 2 (−10.244.1.5:8080); local endpoints 1 → 0 (−10.244.1.5:8080)"
                .to_string()
        ),
        "{lines:#?}"
    );
}
