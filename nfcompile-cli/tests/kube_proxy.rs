//! kube-proxy's own packet-flow expectations (nfcompile/tests/kube-proxy/) with real packets:
//! a representative subset of the fixtures' flows, each fixture on a fresh set of network
//! namespaces whose node is programmed by `nfcompile apply`. The tracer runs every flow
//! offline (nfcompile/tests/kube_proxy.rs); this checks that the kernel agrees with it, and
//! with upstream, where it matters: conntrack, NAT, routing and ICMP are real here.
//!
//! ```text
//!   client ──── vc [ node ] vp ──── pods
//!   every flow   lo: every nodeIP;     every endpoint address of the fixture, /32 or
//!   source that  a listener on the     /128; an echo server on each of them and every
//!   is not the   ports of flows to     endpoint port (TCP and UDP) answering with the
//!   node's       the node              address and port the connection arrived on and
//!                                      the client address it saw
//! ```
//!
//! Who sends: a flow from a nodeIP (`Flow::origin` is Node), or from loopback (only a process
//! on the node can use it: upstream's "localhost to nodePort" rows), is sent from inside the
//! node namespace bound to its source; any other from the client, which holds every such
//! source and routes via the node, which routes each back.
//!
//! How a flow's outcome is seen (`Ran::new`): an answer from the pods names the endpoint that
//! was chosen; an answer from the node's own listener means the packet was left alone ("");
//! a client address other than the flow's source means masquerade (the node's pod-side
//! address is neither a nodeIP nor a flow source, so it cannot be mistaken); a refusal within
//! 0.5 s is REJECT; silence is DROP. Masquerade is recorded over all connections, as upstream
//! marks a flow masqueraded when any of its paths is, and the probe keeps connecting until
//! every expected endpoint answered. A packet the rules should have dropped or rejected but
//! let through comes back as "no route to host" (`UNROUTED`), which is no outcome at all,
//! rather than passing for either.
//!
//! The subset (`choose`): per fixture, the first observable flow of each (outcome kind,
//! protocol, address family, origin, loopback source or not).
//! `every_test_function_and_outcome_with_real_packets` asserts that this still covers every
//! upstream test function, every outcome kind, both families, both protocols and every
//! origin, so a fixture change that loses coverage fails.
//!
//! Not chosen (`unobservable`, which says why for each):
//! - SCTP flows: this kernel cannot open SCTP sockets.
//! - Hairpin flows (the source is itself an endpoint): the pods namespace would send to
//!   itself; unmasqueraded, its own address arriving from outside is a martian, and with
//!   several endpoints in one namespace the answer would not go back through the node.
//! - A source equal to the destination, off the node (the node's own load-balancer IP as
//!   source): only the node can send that, with the VIP local to it; the dedicated
//!   source-range test does.
//! - A loopback destination from off the node: it would never leave the sender.
//! - Untouched flows to an address that is not the node's: the packet would leave for another
//!   host, which this topology does not have.
//! - DROP from the node itself to an address that is not the node's: the route that lets the
//!   node send it at all swallows a packet the rules left alone just the same.
//! - A destination that is one of the client's own source addresses.
//!
//! `a_node_reaches_its_own_load_balancer_ip_only_from_allowed_sources` is the source-range
//! regression of nftables/TestLoadBalancer, asserted by flow name.

use nfcompile_test_support as common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use common::kube_proxy::network::{in_parallel, Fixture, Kind, Topology};
use common::kube_proxy::{self as kp, Flow};
use common::{packets_unavailable, skip};
use nfcompile::ir::Protocol;
use nfcompile::trace::Origin;

const NFCOMPILE: &str = env!("CARGO_BIN_EXE_nfcompile");

#[test]
fn every_test_function_and_outcome_with_real_packets() {
    if let Some(reason) = packets_unavailable() {
        return skip("every_test_function_and_outcome_with_real_packets", &reason);
    }
    let start = Instant::now();
    let suites = kp::suites();
    let fixtures: Vec<Fixture> = suites.iter().map(Fixture::load).collect();
    let plans: Vec<(&Fixture, Vec<&Flow>)> = fixtures.iter().map(|fx| (fx, fx.choose())).collect();

    // Coverage first: it does not need the kernel, and a loss of it must not hide behind a
    // packet failure.
    let chosen = || {
        plans
            .iter()
            .flat_map(|(fx, flows)| flows.iter().map(move |f| (*fx, *f)))
    };
    let function = |fx: &Fixture| fx.suite.file.upstream.test.clone();
    let all: BTreeSet<String> = fixtures.iter().map(function).collect();
    let covered: BTreeSet<String> = chosen().map(|(fx, _)| function(fx)).collect();
    assert_eq!(
        all.difference(&covered).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "upstream test functions with no observable flow"
    );
    let kinds: BTreeSet<Kind> = chosen().map(|(_, f)| Kind::of(f)).collect();
    assert_eq!(kinds, Kind::ALL.into(), "outcome kinds covered");
    let families: BTreeSet<bool> = chosen().map(|(_, f)| f.destination.is_ipv6()).collect();
    assert_eq!(families, [false, true].into(), "IPv4 and IPv6 both covered");
    let protocols: BTreeSet<Protocol> = chosen().map(|(_, f)| f.protocol()).collect();
    assert_eq!(
        protocols,
        [Protocol::Tcp, Protocol::Udp].into(),
        "protocols"
    );
    for origin in [Origin::Pod, Origin::Node, Origin::External] {
        assert!(
            chosen().any(|(fx, f)| fx.origin(f) == origin),
            "no flow from {origin:?}"
        );
    }

    let results = in_parallel(&plans, |(fx, flows)| {
        if flows.is_empty() {
            return Vec::new();
        }
        Topology::new(NFCOMPILE, fx, flows, &[]).run(flows)
    });

    let mut failures = Vec::new();
    let mut excluded: Vec<(&str, usize)> = Vec::new();
    for ((fx, flows), ran) in plans.iter().zip(&results) {
        let kinds: Vec<&str> = flows.iter().map(|f| Kind::of(f).label()).collect();
        eprintln!(
            "{}: {} of {} flows ({})",
            fx.suite.name,
            flows.len(),
            fx.suite.file.flows.len(),
            kinds.join(", ")
        );
        for reason in fx
            .suite
            .file
            .flows
            .iter()
            .filter_map(|f| fx.unobservable(f))
        {
            match excluded.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => excluded.push((reason, 1)),
            }
        }
        failures.extend(
            ran.iter()
                .filter(|r| !r.passes())
                .map(|r| r.describe(&fx.suite.name)),
        );
    }
    let total: usize = plans.iter().map(|(_, f)| f.len()).sum();
    let kind_counts: Vec<String> = Kind::ALL
        .iter()
        .map(|k| {
            let n = chosen().filter(|(_, f)| Kind::of(f) == *k).count();
            format!("{} {n}", k.label())
        })
        .collect();
    eprintln!(
        "kube-proxy flows with real packets: {total} flows of {} fixtures ({} upstream test \
         functions; {}) in {:.1} s; not observable here: {excluded:?}",
        plans.len(),
        covered.len(),
        kind_counts.join(", "),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} flows differ from kube-proxy in the kernel:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// nftables/TestLoadBalancer's source ranges (192.168.0.0/24 and 203.0.113.0/25) hold the
/// node's primary IP, so kube-proxy also allows the load-balancer IPs themselves as sources:
/// a VIP that is a local address of the node (as here, on its loopback) makes the
/// node's own connection to it loop back with the VIP as its source, and that must reach
/// the endpoint, masqueraded. A node address outside every range is no such exception: it
/// is dropped. The fixture has no flow for the latter, so those flows are derived here from
/// the fixture's nodeIPs and ranges (192.168.99.11 among them), with kube-proxy's rule.
#[test]
fn a_node_reaches_its_own_load_balancer_ip_only_from_allowed_sources() {
    if let Some(reason) = packets_unavailable() {
        return skip(
            "a_node_reaches_its_own_load_balancer_ip_only_from_allowed_sources",
            &reason,
        );
    }
    let suites = kp::suites();
    let suite = suites
        .iter()
        .find(|s| s.name == "nftables/TestLoadBalancer")
        .expect("the nftables/TestLoadBalancer fixture");
    let fx = Fixture::load(suite);
    let by_name = |name: &str| {
        suite
            .file
            .flows
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{}: no flow {name:?}", suite.name))
    };
    let svc = fx
        .cluster
        .services
        .iter()
        .find(|s| !s.load_balancer_source_ranges.is_empty())
        .expect("a service with source ranges");
    let vips: Vec<IpAddr> = svc.load_balancer_ips.clone();
    let outside: Vec<IpAddr> = suite
        .file
        .node_ips
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv4())
        .filter(|ip| {
            !svc.load_balancer_source_ranges
                .iter()
                .any(|r| r.contains(*ip))
        })
        .collect();
    assert!(
        outside.contains(&"192.168.99.11".parse().unwrap()),
        "192.168.99.11 is no longer a node address outside every range: {outside:?}"
    );
    let derived: Vec<Flow> = outside
        .iter()
        .flat_map(|src| vips.iter().map(move |vip| (*src, *vip)))
        .map(|(source, destination)| Flow {
            name: format!("node address {source} outside every range to {destination}"),
            source,
            protocol: "TCP".into(),
            destination,
            port: 80,
            output: "DROP".into(),
            masq: false,
            differs: None,
            ours: None,
        })
        .collect();
    let mut flows: Vec<&Flow> = [
        "same node to LB1, SNATted to LB1 (implicitly allowed)",
        "same node to LB2, SNATted to LB2 (implicitly allowed)",
        "node to LB1 (allowed by LoadBalancerSourceRanges)",
        "node to LB2 (allowed by LoadBalancerSourceRanges)",
    ]
    .into_iter()
    .map(by_name)
    .collect();
    flows.extend(&derived);

    let ran = Topology::new(NFCOMPILE, &fx, &flows, &vips).run(&flows);
    let failures: Vec<String> = ran
        .iter()
        .filter(|r| !r.passes())
        .map(|r| r.describe(&suite.name))
        .collect();
    eprintln!(
        "{}: {} source-range flows from the node, its VIPs {vips:?} local",
        suite.name,
        ran.len()
    );
    assert!(
        failures.is_empty(),
        "source ranges, from the node itself:\n{}",
        failures.join("\n")
    );
}
