//! Clean-ups after a commit, against the real kernel: session-affinity entries and UDP flows
//! of endpoints that left, with and without `NFT_MSG_DESTROYSETELEM`, swept again when a
//! clean-up failed; and the feature probe that decides how. Each test runs in a fresh network
//! namespace of its own.

use nfcompile_test_support as common;

use std::process::Command;

use common::{in_fresh_netns, kernel_unavailable, nft, skip};
use nfcompile_netlink::{apply, ApplyError};

#[test]
fn the_syncer_deletes_affinity_entries_of_removed_endpoints() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "the_syncer_deletes_affinity_entries_of_removed_endpoints",
            &reason,
        );
    }
    use nfcompile::incremental::Change;
    use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
    use nfcompile::ir::Protocol;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let svc = move |eps: &[&str]| {
        let mut b = ServiceBuilder::new("d", "sticky", ip("10.96.0.1"))
            .port("p", Protocol::Tcp, 80)
            .session_affinity(600);
        for e in eps {
            b = b.endpoint(ip(e), Some("n2"), &[("p", 8080)]);
        }
        b.build()
    };
    let cluster = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(svc(&["10.244.1.1", "10.244.1.2"]))
        .build();
    let (report, left) = in_fresh_netns(move || {
        let mut s = nfcompile_netlink::Syncer::new();
        s.sync_cluster(cluster).unwrap();
        // What packets would have written: two clients pinned to .1, one to .2.
        nft(&["add element ip nfcompile affinity { \
             192.168.7.1 . 10.96.0.1 . tcp . 80 : 10.244.1.1 . 8080, \
             192.168.7.2 . 10.96.0.1 . tcp . 80 : 10.244.1.1 . 8080, \
             192.168.7.3 . 10.96.0.1 . tcp . 80 : 10.244.1.2 . 8080 }"]);
        let report = s.update(&[Change::Upsert(svc(&["10.244.1.2"]))]).unwrap();
        (report, nft(&["list", "map", "ip", "nfcompile", "affinity"]))
    });
    assert!(report.incremental, "{report:?}");
    assert_eq!(report.affinity_cleared, 2, "{report:?}");
    assert!(left.contains("192.168.7.3"), "{left}");
    assert!(!left.contains("10.244.1.1"), "{left}");
}

/// Without NFT_MSG_DESTROYSETELEM (Linux 6.1) affinity entries are deleted with
/// NFT_MSG_DELSETELEM, which fails the whole batch when an entry is already gone (ENOENT: the
/// clean-up then reads the map again); and a clean-up that never ran is found again from the
/// kernel's state by the next sweep, without a transaction to say what left.
#[test]
fn affinity_left_behind_is_swept_later_also_without_destroysetelem() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "affinity_left_behind_is_swept_later_also_without_destroysetelem",
            &reason,
        );
    }
    use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
    use nfcompile::ir::Protocol;
    use nfcompile_netlink::{Connection, KernelFeatures};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let cluster = move |eps: &[&str]| {
        let mut b = ServiceBuilder::new("d", "sticky", ip("10.96.0.1"))
            .port("p", Protocol::Tcp, 80)
            .session_affinity(600);
        for e in eps {
            b = b.endpoint(ip(e), Some("n2"), &[("p", 8080)]);
        }
        ClusterBuilder::new("n1", [ip("192.168.0.1")])
            .service(b.build())
            .build()
    };
    let before = nfcompile::compile(&cluster(&["10.244.1.1", "10.244.1.2"])).unwrap();
    let after = nfcompile::compile(&cluster(&["10.244.1.2"])).unwrap();
    let (probed, missing, swept, left) = in_fresh_netns(move || {
        let connection = Connection::open().unwrap();
        let probed = connection.features().unwrap();
        let old_kernel = Connection::open().unwrap();
        old_kernel.assume_features(KernelFeatures {
            destroy_elements: false,
        });
        apply(&before).unwrap();
        nft(&["add element ip nfcompile affinity { \
             192.168.7.1 . 10.96.0.1 . tcp . 80 : 10.244.1.1 . 8080, \
             192.168.7.2 . 10.96.0.1 . tcp . 80 : 10.244.1.1 . 8080, \
             192.168.7.3 . 10.96.0.1 . tcp . 80 : 10.244.1.2 . 8080 }"]);
        // The endpoint leaves, and the clean-up that should follow never runs.
        let (live, generation) = nfcompile_netlink::readback_with_generation().unwrap();
        let tx = nfcompile::diff::diff(&live, &after);
        old_kernel
            .apply_transaction(&tx, &after, Some(generation))
            .unwrap();
        // DELSETELEM of an entry that is not there fails, and names ENOENT.
        let table = &after.tables[0];
        let set = table.set("affinity").unwrap();
        let absent = nfcompile::model::Element {
            key: vec![
                nfcompile::model::Value::Addr(ip("192.168.7.9")),
                nfcompile::model::Value::Addr(ip("10.96.0.1")),
                nfcompile::model::Value::Proto(Protocol::Tcp),
                nfcompile::model::Value::Port(80),
            ],
            data: None,
            comment: None,
        };
        let missing = old_kernel.remove_elements(table, set, &[absent]);
        // A later sweep (no transaction: nothing changed) finds the two entries and deletes
        // them with DELSETELEM.
        let cleanup = nfcompile_netlink::clean_up(
            &old_kernel,
            &mut None,
            &after,
            &nfcompile::incremental::Stale::default(),
            Some(nfcompile_netlink::Sweep {
                desired: &after,
                udp: None,
            }),
        );
        let left = nft(&["list", "map", "ip", "nfcompile", "affinity"]);
        (probed, missing.map(|_| ()), cleanup, left)
    });
    // NFT_MSG_DESTROYSETELEM came with Linux 6.3.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut version = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap(), version.next().unwrap());
    assert_eq!(
        probed.destroy_elements,
        (major, minor) >= (6, 3),
        "the probe on {release}: {probed:?}"
    );
    assert!(
        matches!(
            missing,
            Err(ApplyError::Rejected {
                errno: libc::ENOENT,
                ..
            })
        ),
        "{missing:?}"
    );
    assert_eq!(swept.affinity_cleared, 2, "{swept:?}");
    assert!(swept.failures.is_empty(), "{swept:?}");
    assert!(left.contains("192.168.7.3"), "{left}");
    assert!(!left.contains("10.244.1.1"), "{left}");
}

/// The feature probe is a batch the kernel aborts: it leaves no table and does not move the
/// ruleset's generation (which would make a transaction planned before it fail), also beside
/// a table of its name that someone else holds.
#[test]
fn the_feature_probe_changes_nothing() {
    if let Some(reason) = kernel_unavailable() {
        return skip("the_feature_probe_changes_nothing", &reason);
    }
    let (before, after, listing) = in_fresh_netns(|| {
        nft(&["add table ip nfcompile-probe { chain c { counter; }; }"]);
        let (_, before) = nfcompile_netlink::readback_with_generation().unwrap();
        for _ in 0..3 {
            nfcompile_netlink::Connection::open()
                .unwrap()
                .features()
                .unwrap();
        }
        let (_, after) = nfcompile_netlink::readback_with_generation().unwrap();
        (before, after, nft(&["list", "ruleset"]))
    });
    assert_eq!(before, after, "the probe moved the generation");
    assert!(
        listing.contains("table ip nfcompile-probe") && listing.contains("chain c"),
        "{listing}"
    );
    assert!(!listing.contains("ranges"), "{listing}");
}

/// The `Syncer`'s update path and UDP flows, as kube-proxy keeps them: a flow stays while its
/// endpoint serves, also after the endpoint left the maps (terminating, another one ready);
/// when it stops serving — no transaction mentions it then — its flows go. Real flows: local
/// datagrams to the cluster IP, DNATed by the output hook to endpoints on loopback.
#[test]
fn the_syncer_keeps_udp_flows_while_their_endpoint_serves_and_then_deletes_them() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "the_syncer_keeps_udp_flows_while_their_endpoint_serves_and_then_deletes_them",
            &reason,
        );
    }
    use nfcompile::incremental::Change;
    use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
    use nfcompile::ir::Protocol;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    // .3 ready, terminating but serving, or terminating and no longer serving.
    let svc = move |three: (bool, bool)| {
        let mut s = ServiceBuilder::new("d", "dns", ip("10.96.0.2"))
            .port("p", Protocol::Udp, 53)
            .endpoint(ip("10.244.1.2"), Some("n2"), &[("p", 5353)])
            .endpoint(ip("10.244.1.3"), Some("n2"), &[("p", 5353)])
            .build();
        let (ready, serving) = three;
        s.endpoints[1].ready = ready;
        s.endpoints[1].serving = serving;
        s.endpoints[1].terminating = !ready;
        s
    };
    let cluster = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(svc((true, true)))
        .build();
    let flows = || udp_flows_to("10.96.0.2", ["10.244.1.2", "10.244.1.3"]);
    let (reports, counts) = in_fresh_netns(move || {
        let _servers = loopback_endpoints(&["10.244.1.2", "10.244.1.3"]);
        let mut s = nfcompile_netlink::Syncer::new();
        s.sync_cluster(cluster).unwrap();
        // 24 flows, one per client socket: each drew an endpoint.
        let clients = udp_clients("10.96.0.2:53", 24);
        let mut counts = vec![flows()];
        let mut reports = Vec::new();
        for three in [(false, true), (false, false)] {
            reports.push(s.update(&[Change::Upsert(svc(three))]).unwrap());
            counts.push(flows());
        }
        drop(clients);
        (reports, counts)
    });
    let [to_2, to_3] = counts[0];
    assert!(to_2 > 0 && to_3 > 0 && to_2 + to_3 == 24, "{counts:?}");
    // Terminating but serving: it left the maps, its flows stay.
    assert!(reports[0].incremental, "{:?}", reports[0]);
    assert_eq!(reports[0].udp_flows_cleared, 0, "{:?}", reports[0]);
    assert_eq!(counts[1], [to_2, to_3], "{counts:?}");
    // No longer serving: the maps did not change, its flows go.
    assert_eq!(reports[1].udp_flows_cleared, to_3, "{:?}", reports[1]);
    assert_eq!(counts[2], [to_2, 0], "{counts:?}");
}

/// In this thread's namespace: the node at 192.168.0.1 and endpoints at `endpoints` (each with
/// a UDP socket bound on port 5353, returned) on loopback, and a route for the service CIDR, so
/// local datagrams to a cluster IP are DNATed by the output hook to a local endpoint.
fn loopback_endpoints(endpoints: &[&str]) -> Vec<std::net::UdpSocket> {
    let mut cmd = String::from("ip link set lo up && ip addr add 192.168.0.1/32 dev lo");
    for e in endpoints {
        cmd.push_str(&format!(" && ip addr add {e}/32 dev lo"));
    }
    cmd.push_str(" && ip route add 10.96.0.0/16 dev lo");
    let out = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    endpoints
        .iter()
        .map(|e| std::net::UdpSocket::bind(format!("{e}:5353")).unwrap())
        .collect()
}

/// `n` UDP flows to `frontend`, one datagram from each of `n` sockets (kept open).
fn udp_clients(frontend: &str, n: usize) -> Vec<std::net::UdpSocket> {
    (0..n)
        .map(|_| {
            let c = std::net::UdpSocket::bind("192.168.0.1:0").unwrap();
            c.send_to(b"ping", frontend).unwrap();
            c
        })
        .collect()
}

/// How many of the conntrack table's UDP flows to `frontend` each endpoint answers.
fn udp_flows_to<const N: usize>(frontend: &str, endpoints: [&str; N]) -> [usize; N] {
    use nfcompile_netlink::conntrack::{delete_flows_where, Flow};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let seen = std::cell::RefCell::new(Vec::<Flow>::new());
    delete_flows_where(&[nfcompile::model::Family::Ipv4], |_, f| {
        if f.orig.dst == ip(frontend) {
            seen.borrow_mut().push(f.clone());
        }
        false
    })
    .unwrap();
    let seen = seen.into_inner();
    endpoints.map(|e| seen.iter().filter(|f| f.reply.src == ip(e)).count())
}

/// After a commit each clean-up runs even if the other fails, and the failure is reported, not
/// returned (the commit stands): here someone replaced our table between the commit and the
/// clean-up, so the affinity map cannot be read as declared, while the UDP flows of the
/// removed endpoint are still deleted.
#[test]
fn a_failed_clean_up_is_reported_and_the_other_still_runs() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "a_failed_clean_up_is_reported_and_the_other_still_runs",
            &reason,
        );
    }
    use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
    use nfcompile::ir::Protocol;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    // A sticky TCP service (so there is an affinity map to clean) and a UDP one.
    let cluster = move |eps: &[&str]| {
        let mut dns = ServiceBuilder::new("d", "dns", ip("10.96.0.2")).port("p", Protocol::Udp, 53);
        for e in eps {
            dns = dns.endpoint(ip(e), Some("n2"), &[("p", 5353)]);
        }
        let sticky = ServiceBuilder::new("d", "sticky", ip("10.96.0.1"))
            .port("p", Protocol::Tcp, 80)
            .session_affinity(600)
            .endpoint(ip("10.244.1.2"), Some("n2"), &[("p", 8080)]);
        ClusterBuilder::new("n1", [ip("192.168.0.1")])
            .service(dns.build())
            .service(sticky.build())
            .build()
    };
    let before = cluster(&["10.244.1.2", "10.244.1.3"]);
    let after = cluster(&["10.244.1.2"]);
    let (flows_before, cleanup, flows_after) = in_fresh_netns(move || {
        let _servers = loopback_endpoints(&["10.244.1.2", "10.244.1.3"]);
        let (old, new) = (
            nfcompile::compile(&before).unwrap(),
            nfcompile::compile(&after).unwrap(),
        );
        apply(&old).unwrap();
        let _clients = udp_clients("10.96.0.2:53", 24);
        let flows_before = udp_flows_to("10.96.0.2", ["10.244.1.2", "10.244.1.3"]);
        let (live, generation) = nfcompile_netlink::readback_with_generation().unwrap();
        let tx = nfcompile::diff::diff(&live, &new);
        let connection = nfcompile_netlink::Connection::open().unwrap();
        connection
            .apply_transaction(&tx, &new, Some(generation))
            .unwrap();
        let stale = nfcompile::incremental::stale_in(&tx, &new);
        // Someone replaced our table: its affinity map is no longer the one declared.
        nft(&["delete table ip nfcompile"]);
        nft(&[
            "add table ip nfcompile { map affinity { type ipv4_addr : ipv4_addr; \
               elements = { 192.168.7.1 : 10.244.1.3 }; }; }",
        ]);
        let udp = nfcompile::incremental::UdpServing::of_cluster(&after);
        let cleanup = nfcompile_netlink::clean_up(
            &connection,
            &mut None,
            &new,
            &stale,
            Some(nfcompile_netlink::Sweep {
                desired: &new,
                udp: Some(&udp),
            }),
        );
        let flows_after = udp_flows_to("10.96.0.2", ["10.244.1.2", "10.244.1.3"]);
        (flows_before, cleanup, flows_after)
    });
    let [to_2, to_3] = flows_before;
    assert!(to_3 > 0 && to_2 + to_3 == 24, "{flows_before:?}");
    assert_eq!(cleanup.failures.len(), 1, "{cleanup:?}");
    assert!(
        cleanup.failures[0].contains("session-affinity"),
        "{cleanup:?}"
    );
    assert_eq!(cleanup.udp_flows_cleared, to_3, "{cleanup:?}");
    assert_eq!(flows_after, [to_2, 0]);
}
