//! kube-proxy's own packet-flow expectations through the tracer: every flow of every fixture
//! in `tests/kube-proxy/` (ported from kube-proxy's nftables- and iptables-mode unit tests),
//! traced over the rules compiled for the fixture's node. No kernel, no root. A subset also
//! runs with real packets in nfcompile-cli/tests/kube_proxy.rs.

use nfcompile_test_support as common;

use std::collections::BTreeMap;

use common::kube_proxy::{self as kp, Observed, Suite};
use nfcompile::front::Source;
use nfcompile::trace::{self, Packet};

fn observe(suite: &Suite, flow: &kp::Flow, prepared: &Compiled) -> Observed {
    let packet = Packet {
        proto: flow.protocol(),
        src: flow.source,
        src_port: 40000,
        dst: flow.destination,
        dst_port: flow.port,
        origin: flow.origin(&suite.file, &prepared.cluster),
    };
    let t = trace::trace(&prepared.ruleset, &suite.file.node_ips, &packet)
        .unwrap_or_else(|e| panic!("{} / {}: {e}", suite.name, flow.name));
    let mut seen = Observed::default();
    for b in t.branches {
        match b.outcome {
            trace::Outcome::Dnat { to, masquerade } => {
                seen.dnat.insert(kp::parse_target(&to));
                seen.masq |= masquerade;
            }
            trace::Outcome::Drop => seen.drop = true,
            trace::Outcome::Reject => seen.reject = true,
            trace::Outcome::Accept { masquerade } => {
                seen.accept = true;
                seen.masq |= masquerade;
            }
        }
    }
    seen
}

struct Compiled {
    cluster: nfcompile::ir::Cluster,
    ruleset: nfcompile::model::Ruleset,
}

fn compile(suite: &Suite) -> Compiled {
    let src = Source::read(&suite.cluster).unwrap();
    let (cluster, warnings) = nfcompile::front::load(&[src], Some(&suite.file.node))
        .unwrap_or_else(|e| panic!("{}: {e}", suite.name));
    assert!(warnings.is_empty(), "{}: {warnings:?}", suite.name);
    let ruleset = nfcompile::compile(&cluster).unwrap_or_else(|e| panic!("{}: {e}", suite.name));
    Compiled { cluster, ruleset }
}

#[test]
fn every_kube_proxy_flow_through_the_tracer() {
    let suites = kp::suites();
    // (flows, passing, deliberately differing) per upstream file.
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for suite in &suites {
        let compiled = compile(suite);
        let c = counts.entry(suite.file.upstream.file.clone()).or_default();
        for flow in &suite.file.flows {
            let seen = observe(suite, flow, &compiled);
            let (output, masq) = flow.expected();
            c.0 += 1;
            if kp::judge(output, masq, &seen) {
                if flow.differs.is_some() {
                    c.2 += 1;
                } else {
                    c.1 += 1;
                }
            } else {
                failures.push(format!(
                    "{} / {:?} ({} {} → {}:{}): expected {output:?}, masq {masq}; traced {seen}",
                    suite.name, flow.name, flow.protocol, flow.source, flow.destination, flow.port
                ));
            }
        }
    }
    for (file, (flows, pass, differ)) in &counts {
        eprintln!("{file}: {flows} flows, {pass} as upstream, {differ} documented differences");
    }
    assert!(
        failures.is_empty(),
        "{} flows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every flow ported, as the README counts them: nftables mode holds as upstream.
    let nft = &counts["pkg/proxy/nftables/proxier_test.go"];
    let ipt = &counts["pkg/proxy/iptables/proxier_test.go"];
    assert_eq!(
        *nft,
        (207, 207, 0),
        "nftables-mode flows, passing, differing"
    );
    assert_eq!(
        *ipt,
        (246, 229, 17),
        "iptables-mode flows, passing, differing"
    );
}

/// The judge itself: a wrong target set, a missing masquerade, a drop on one way must fail.
#[test]
fn the_judge_refuses_near_misses() {
    let ok = Observed {
        dnat: [
            kp::parse_target("10.180.0.1:80"),
            kp::parse_target("10.180.0.2:80"),
        ]
        .into(),
        masq: true,
        ..Default::default()
    };
    assert!(kp::judge("10.180.0.2:80, 10.180.0.1:80", true, &ok));
    assert!(!kp::judge("10.180.0.1:80", true, &ok));
    assert!(!kp::judge("10.180.0.1:80, 10.180.0.2:80", false, &ok));
    let mut dropped_too = ok.clone();
    dropped_too.drop = true;
    assert!(!kp::judge(
        "10.180.0.1:80, 10.180.0.2:80",
        true,
        &dropped_too
    ));
    assert!(kp::judge(
        "DROP",
        false,
        &Observed {
            drop: true,
            ..Default::default()
        }
    ));
    assert!(!kp::judge(
        "REJECT",
        false,
        &Observed {
            drop: true,
            ..Default::default()
        }
    ));
    assert!(kp::judge(
        "",
        false,
        &Observed {
            accept: true,
            ..Default::default()
        }
    ));
    let v6 = Observed {
        dnat: [kp::parse_target("[fd00:10:180::1]:80")].into(),
        ..Default::default()
    };
    assert!(kp::judge("[fd00:10:180::1]:80", false, &v6));
}
