//! The conformance matrix through the tracer: every case of `common::conformance`, for TCP and
//! UDP, traced over the compiled model of the node that handles it — and of the second node
//! when the first one only forwards the packet there. No kernel, no root. The same cases run
//! with real packets in nfcompile-cli/tests/conformance.rs.

use nfcompile_test_support as common;

use std::net::IpAddr;

use common::conformance::{self as matrix, Case, From, Outcome, Reached, Src, CASES, NODES};
use nfcompile::front::Source;
use nfcompile::ir::Protocol;
use nfcompile::model::Ruleset;
use nfcompile::trace::{self, Origin, Packet};

struct CompiledNode {
    ruleset: Ruleset,
    addresses: Vec<IpAddr>,
}

fn compile_nodes() -> Vec<CompiledNode> {
    let src = Source::read(&matrix::cluster_file()).unwrap();
    NODES
        .iter()
        .map(|n| {
            let (cluster, _) =
                nfcompile::front::load(std::slice::from_ref(&src), Some(n.name)).unwrap();
            CompiledNode {
                ruleset: nfcompile::compile(&cluster).unwrap(),
                addresses: cluster.node.addresses.clone(),
            }
        })
        .collect()
}

/// Trace the first packet of `case` on the node that handles it; a packet that node forwards
/// untouched to the other node's address is traced again there, as arriving from the network.
fn predict(nodes: &[CompiledNode], case: &Case, proto: Protocol) -> Outcome {
    let origin = match case.from {
        From::Pod(_) => Origin::Pod,
        From::Node(_) => Origin::Node,
        From::External => Origin::External,
    };
    let mut reached = Vec::new();
    let mut other = Vec::new();
    let (mut drop, mut reject) = (false, false);
    let mut hops = vec![(
        matrix::first_node(case.from, case.dst),
        origin,
        case.from.address(),
    )];
    while let Some((node, origin, src)) = hops.pop() {
        let packet = Packet {
            proto,
            src: src.parse().unwrap(),
            src_port: 40000,
            dst: case.dst.parse().unwrap(),
            dst_port: case.port,
            origin,
        };
        let n = &nodes[node];
        let t = trace::trace(&n.ruleset, &n.addresses, &packet)
            .unwrap_or_else(|e| panic!("{}: {e}", case.what));
        for b in t.branches {
            match b.outcome {
                trace::Outcome::Dnat { to, masquerade } => {
                    let (addr, port) = to.rsplit_once(':').unwrap();
                    match matrix::pod_at(addr) {
                        Some(p) if port == matrix::TARGET_PORT.to_string() => {
                            reached.push(Reached {
                                pod: p.name.to_string(),
                                src: if masquerade { Src::Masq } else { Src::Kept },
                            })
                        }
                        _ => other.push(format!("dnat to {to}")),
                    }
                }
                trace::Outcome::Drop => drop = true,
                trace::Outcome::Reject => reject = true,
                trace::Outcome::Accept { masquerade } => {
                    // Passed through untouched: it is the other node's business if addressed
                    // to it, and goes nowhere otherwise.
                    match NODES.iter().position(|x| x.addr == case.dst) {
                        Some(next) if next != node => hops.push((
                            next,
                            Origin::External,
                            if masquerade { NODES[node].addr } else { src },
                        )),
                        _ => other.push(format!("accepted by {}", NODES[node].name)),
                    }
                }
            }
        }
    }
    match (reached.is_empty(), drop, reject, other.is_empty()) {
        (false, false, false, true) => {
            reached.sort();
            reached.dedup();
            Outcome::Reached(reached)
        }
        (true, true, false, true) => Outcome::Drop,
        (true, false, true, true) => Outcome::Reject,
        _ => Outcome::Other(format!(
            "reached {reached:?}, drop {drop}, reject {reject}, {other:?}"
        )),
    }
}

#[test]
fn every_case_of_the_matrix_through_the_tracer() {
    let nodes = compile_nodes();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in CASES {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let outcome = predict(&nodes, case, proto);
            ran += 1;
            if !matrix::conforms(case.expect, &outcome, false) {
                failures.push(format!(
                    "{} ({proto:?} {:?} → {}:{}): expected {:?}, traced {outcome:?}",
                    case.what, case.from, case.dst, case.port, case.expect
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, 2 * CASES.len());
}
