use super::*;
use crate::front::Source;

/// A scenario compiled, with its node's addresses.
fn scenario(name: &str) -> (Ruleset, Vec<IpAddr>) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/in/{name}.yaml"));
    let path = if path.exists() {
        path
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{name}.yaml"))
    };
    let src = Source::read(&path).unwrap();
    let (cluster, _) = crate::front::load(std::slice::from_ref(&src), None).unwrap();
    (
        crate::compile(&cluster).unwrap(),
        cluster.node.addresses.clone(),
    )
}

fn run(name: &str, origin: Origin, proto: Protocol, src: &str, dst: &str, port: u16) -> Trace {
    let (rs, addrs) = scenario(name);
    let p = Packet {
        proto,
        src: src.parse().unwrap(),
        src_port: 40000,
        dst: dst.parse().unwrap(),
        dst_port: port,
        origin,
    };
    trace(&rs, &addrs, &p).unwrap()
}

fn verdict(name: &str, origin: Origin, src: &str, dst: &str, port: u16) -> String {
    run(name, origin, Protocol::Tcp, src, dst, port).verdict_line()
}

#[test]
fn vip_workshop() {
    let v = "vip-workshop";
    // The public client through the VIP: DNAT to pod B, masqueraded (eTP Cluster).
    assert_eq!(
        verdict(v, Origin::External, "192.168.10.10", "192.168.10.100", 80),
        "verdict: dnat 192.168.20.20:80 masquerade"
    );
    // A port the cluster IP does not serve is refused; an address nothing serves is left alone.
    assert_eq!(
        verdict(v, Origin::External, "192.168.10.10", "10.96.0.100", 81),
        "verdict: reject"
    );
    assert_eq!(
        verdict(v, Origin::External, "192.168.10.10", "192.168.10.200", 80),
        "verdict: accept"
    );
    // A pod calling the cluster IP keeps its address; pod B calling itself is hairpinned.
    assert_eq!(
        verdict(v, Origin::Pod, "192.168.20.30", "10.96.0.100", 80),
        "verdict: dnat 192.168.20.20:80"
    );
    assert_eq!(
        verdict(v, Origin::Pod, "192.168.20.20", "10.96.0.100", 80),
        "verdict: dnat 192.168.20.20:80 masquerade"
    );
    // The node port answers on the primary address only.
    assert_eq!(
        verdict(v, Origin::External, "192.168.10.10", "192.168.20.1", 30080),
        "verdict: dnat 192.168.20.20:80 masquerade"
    );
    assert_eq!(
        verdict(v, Origin::External, "192.168.10.10", "192.168.10.1", 30080),
        "verdict: accept"
    );
}

#[test]
fn source_ip_lab_with_both_policies() {
    let echo = "verdict: dnat 10.180.1.136:8080";
    // Cluster policy: external clients of the node port and LB are masqueraded.
    let c = "source-ip-lab-cluster-policy";
    assert_eq!(
        verdict(c, Origin::External, "104.132.1.79", "10.240.0.5", 31080),
        format!("{echo} masquerade")
    );
    assert_eq!(
        verdict(c, Origin::External, "104.132.1.79", "104.198.149.140", 80),
        format!("{echo} masquerade")
    );
    assert_eq!(
        verdict(c, Origin::Pod, "10.244.3.8", "10.0.170.92", 80),
        echo
    );
    // Local policy on the node with the endpoint: the client address is preserved.
    let l = "source-ip-lab-local-policy";
    assert_eq!(
        verdict(l, Origin::External, "104.132.1.79", "10.240.0.3", 31080),
        echo
    );
    assert_eq!(
        verdict(l, Origin::External, "104.132.1.79", "104.198.149.140", 80),
        echo
    );
    // Local policy on a node without endpoints: external clients dropped; pods and the node
    // itself still get through (the node masqueraded).
    let n = "source-ip-lab-local-policy-no-local-endpoints";
    assert_eq!(
        verdict(n, Origin::External, "104.132.1.79", "10.240.0.4", 31080),
        "verdict: drop"
    );
    assert_eq!(
        verdict(n, Origin::External, "104.132.1.79", "104.198.149.140", 80),
        "verdict: drop"
    );
    assert_eq!(
        verdict(n, Origin::Pod, "10.244.3.8", "104.198.149.140", 80),
        echo
    );
    assert_eq!(
        verdict(n, Origin::Node, "10.240.0.4", "104.198.149.140", 80),
        format!("{echo} masquerade")
    );
    // Unallocated addresses of the service CIDR are dropped.
    assert_eq!(
        verdict(n, Origin::Pod, "10.244.3.8", "10.0.99.99", 80),
        "verdict: drop"
    );
}

#[test]
fn endpoints_are_chosen_evenly() {
    let t = run(
        "two-node-cluster",
        Origin::Pod,
        Protocol::Tcp,
        "10.42.0.50",
        "10.43.180.238",
        80,
    );
    assert_eq!(t.verdict_line(), "verdict: dnat 10.42.0.8:80 10.42.1.2:80");
    assert_eq!(t.branches.len(), 2);
    assert!(t
        .branches
        .iter()
        .all(|b| (b.probability - 0.5).abs() < 1e-6));
    // Each branch says which chains and rules it went through.
    assert!(t.branches[0]
        .steps
        .iter()
        .any(|s| s.starts_with("services: ip daddr . meta l4proto . th dport vmap @service-ips")));
}

#[test]
fn services_without_endpoints() {
    let v = "no-endpoints";
    assert_eq!(
        verdict(v, Origin::Pod, "10.244.0.9", "10.96.40.1", 80),
        "verdict: reject"
    );
    assert_eq!(
        verdict(v, Origin::External, "203.0.113.9", "192.168.1.10", 30040),
        "verdict: reject"
    );
    assert_eq!(
        verdict(v, Origin::Pod, "10.244.0.9", "10.96.40.2", 80),
        "verdict: drop"
    );
    assert_eq!(
        verdict(v, Origin::Pod, "10.244.0.9", "10.96.40.3", 80),
        "verdict: dnat 10.244.1.41:8080"
    );
}

#[test]
fn source_ranges_and_udp() {
    let v = "source-ranges";
    assert_eq!(
        verdict(v, Origin::External, "203.0.113.5", "198.51.100.7", 443),
        "verdict: dnat 10.244.1.4:8443 masquerade"
    );
    assert_eq!(
        verdict(v, Origin::External, "8.8.8.8", "198.51.100.7", 443),
        "verdict: drop"
    );
    // Ranges never restrict the node port.
    assert_eq!(
        verdict(v, Origin::External, "8.8.8.8", "192.168.1.10", 31443),
        "verdict: dnat 10.244.1.4:8443 masquerade"
    );
    let dns = run(
        "two-node-cluster",
        Origin::Pod,
        Protocol::Udp,
        "10.42.0.50",
        "10.43.0.10",
        53,
    );
    assert_eq!(dns.verdict_line(), "verdict: dnat 10.42.0.2:53");
}

#[test]
fn every_construct_of_random_clusters_is_understood() {
    // Unknown constructs are errors: tracing random clusters' frontends must never fail.
    for seed in 0..30 {
        let c = crate::synth::random(seed, 15);
        let rs = crate::compile(&c).unwrap();
        for svc in &c.services {
            for ip in svc.cluster_ips.iter().chain(&svc.load_balancer_ips) {
                for port in &svc.ports {
                    for origin in [Origin::Pod, Origin::Node, Origin::External] {
                        let src: IpAddr = match ip {
                            IpAddr::V4(_) => "10.128.9.9".parse().unwrap(),
                            IpAddr::V6(_) => "fd00:10::9".parse().unwrap(),
                        };
                        let p = Packet {
                            proto: port.protocol,
                            src,
                            src_port: 1234,
                            dst: *ip,
                            dst_port: port.port as u16,
                            origin,
                        };
                        let t = trace(&rs, &c.node.addresses, &p)
                            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                        let total: f64 = t.branches.iter().map(|b| b.probability).sum();
                        assert!(
                            (total - 1.0).abs() < 1e-9,
                            "seed {seed}: probabilities add up to {total}"
                        );
                    }
                }
            }
        }
    }
}

/// The probability of reaching `to` (`address:port`).
fn share(t: &Trace, to: &str) -> f64 {
    t.branches
        .iter()
        .filter(|b| matches!(&b.outcome, Outcome::Dnat { to: x, .. } if x == to))
        .map(|b| b.probability)
        .sum()
}

#[test]
fn weights_set_the_probabilities() {
    let t = run(
        "weights",
        Origin::Pod,
        Protocol::Tcp,
        "10.244.0.9",
        "10.96.0.10",
        80,
    );
    assert!((share(&t, "10.244.1.10:8080") - 0.25).abs() < 1e-6, "{t:?}");
    assert!((share(&t, "10.244.1.11:8080") - 0.75).abs() < 1e-6, "{t:?}");
    let t = run(
        "weights",
        Origin::Pod,
        Protocol::Tcp,
        "10.244.0.9",
        "10.96.0.20",
        443,
    );
    for (to, want) in [
        ("10.244.1.20:8443", 5.0 / 8.0),
        ("10.244.1.21:8443", 2.0 / 8.0),
        ("10.244.1.22:8443", 1.0 / 8.0),
    ] {
        assert!((share(&t, to) - want).abs() < 1e-6, "{to}: {t:?}");
    }
}

#[test]
fn counters_show_in_the_trace_and_never_change_the_verdict() {
    let steps = |origin, dst: &str, port| -> Vec<String> {
        let t = run("counters", origin, Protocol::Tcp, "198.18.0.7", dst, port);
        assert_eq!(t.branches.len(), 2, "{t:#?}"); // two cluster-wide endpoints
        t.branches[0].steps.clone()
    };
    let counted = |steps: &[String]| -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| s.trim().strip_prefix("counted in "))
            .map(str::to_string)
            .collect()
    };
    // New connection in the services chain (nat), then its packet after DNAT (filter).
    let lb = steps(Origin::External, "198.51.100.80", 80);
    assert_eq!(
        counted(&lb),
        [
            "connections/default/web/tcp/http",
            "traffic/default/web/tcp/http"
        ]
    );
    let node_port = steps(Origin::External, "192.168.1.10", 30080);
    assert_eq!(
        counted(&node_port),
        [
            "connections/default/web/tcp/http",
            "traffic/default/web/tcp/http"
        ]
    );
    // Nothing of a service: no counter rule applies (a missed counter map ends the rule).
    let t = run(
        "counters",
        Origin::External,
        Protocol::Tcp,
        "198.18.0.7",
        "198.18.0.1",
        80,
    );
    assert_eq!(t.verdict_line(), "verdict: accept");
    assert!(counted(&t.branches[0].steps).is_empty(), "{t:#?}");
    // The same verdicts as without counters.
    let (plain, addrs) = scenario("counters");
    let mut plain = plain;
    for table in &mut plain.tables {
        table.counters.clear();
        table.sets.retain(|s| s.data != Some(SetData::Counter));
        table.chains.retain(|c| !c.name.starts_with("count"));
        for c in &mut table.chains {
            c.rules.retain(|r| {
                !r.statements
                    .iter()
                    .any(|s| matches!(s, Statement::CounterMap { .. }))
            });
        }
    }
    for (dst, port) in [
        ("198.51.100.80", 80),
        ("192.168.1.10", 30080),
        ("10.96.0.90", 9100),
    ] {
        let p = Packet {
            proto: Protocol::Tcp,
            src: "198.18.0.7".parse().unwrap(),
            src_port: 40000,
            dst: dst.parse().unwrap(),
            dst_port: port,
            origin: Origin::External,
        };
        let with = run(
            "counters",
            Origin::External,
            Protocol::Tcp,
            "198.18.0.7",
            dst,
            port,
        );
        let without = trace(&plain, &addrs, &p).unwrap();
        assert_eq!(outcomes(&with), outcomes(&without), "{dst}:{port}");
    }
}
