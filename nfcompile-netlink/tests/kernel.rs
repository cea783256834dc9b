//! The netlink backend against the real kernel, each test in a fresh network namespace of
//! its own (a thread that unshares its network namespace; commands it starts inherit it).

use nfcompile_test_support as common;

use std::process::Command;

use common::{in_fresh_netns, kernel_unavailable, nft, skip};
use nfcompile::model::{ElementData, Ruleset, Verdict};
use nfcompile_netlink::{apply, apply_transaction, normalize, readback, ApplyError, ReadbackError};

/// `nft -j list ruleset` without what differs between two loads of the same ruleset.
fn json_listing() -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&nft(&["-j", "list", "ruleset"])).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.remove("metainfo");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn compile(path: &std::path::Path) -> Ruleset {
    let src = nfcompile::front::Source::read(path).unwrap();
    nfcompile::compile_sources(&[src], None).unwrap().0
}

#[test]
fn netlink_apply_lists_exactly_like_nft_f_for_every_scenario() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "netlink_apply_lists_exactly_like_nft_f_for_every_scenario",
            &reason,
        );
    }
    let mut compared = 0;
    for (name, path) in common::scenarios() {
        let golden = common::golden_dir("nft").join(format!("{name}.nft"));
        let ruleset = compile(&path);
        let (text, json) = in_fresh_netns(move || {
            nft(&["-f", golden.to_str().unwrap()]);
            (nft(&["list", "ruleset"]), json_listing())
        });
        // The script leaves out what nft 1.0 cannot load (IPv6 affinity updates); compare
        // with what it loads. netlink_writes_what_the_script_leaves_out checks the rest.
        let loaded = nfcompile::emit::text::as_loaded(&ruleset);
        let (text2, json2) = in_fresh_netns(move || {
            apply(&loaded).unwrap_or_else(|e| panic!("{name}: {e}"));
            (nft(&["list", "ruleset"]), json_listing())
        });
        assert!(
            text == text2,
            "{path:?}: nft list differs after netlink apply:\n{}",
            common::first_differences(&text, &text2)
        );
        assert!(
            json == json2,
            "{path:?}: nft -j list differs after netlink apply"
        );
        compared += 1;
    }
    assert!(compared >= 13);
}

/// Fixed shapes (the last one large enough for two endpoint-map shards) and seeded random
/// clusters from `nfcompile::synth::random`.
fn generated() -> Vec<(String, Ruleset)> {
    let mut out = Vec::new();
    for (services, endpoints, nodes) in [(60, 3, 3), (200, 1, 2), (41, 7, 5), (1700, 20, 4)] {
        let shape = nfcompile::synth::Shape {
            services,
            endpoints,
            nodes,
        };
        let cluster = nfcompile::synth::cluster(shape);
        out.push((format!("{shape:?}"), nfcompile::compile(&cluster).unwrap()));
    }
    for seed in 1..=16 {
        let cluster = nfcompile::synth::random(seed, 30);
        out.push((
            format!("random seed {seed}"),
            nfcompile::compile(&cluster).unwrap(),
        ));
    }
    out
}

#[test]
fn generated_clusters_list_exactly_like_nft_f() {
    if let Some(reason) = kernel_unavailable() {
        return skip("generated_clusters_list_exactly_like_nft_f", &reason);
    }
    let all = generated();
    assert!(all
        .iter()
        .any(|(_, r)| r.tables[0].set("endpoints-shard1").is_some()));
    for (i, (what, ruleset)) in all.into_iter().enumerate() {
        let text = nfcompile::emit::text::write_string(&ruleset);
        let a = in_fresh_netns(move || {
            let file = std::env::temp_dir().join(format!("nfc-gen-{}-{i}.nft", std::process::id()));
            std::fs::write(&file, text).unwrap();
            nft(&["-f", file.to_str().unwrap()]);
            std::fs::remove_file(&file).unwrap();
            (nft(&["list", "ruleset"]), json_listing())
        });
        let loaded = nfcompile::emit::text::as_loaded(&ruleset);
        let b = in_fresh_netns(move || {
            apply(&loaded).unwrap();
            (nft(&["list", "ruleset"]), json_listing())
        });
        assert!(
            a.0 == b.0,
            "{what}:\n{}",
            common::first_differences(&a.0, &b.0)
        );
        assert!(a.1 == b.1, "{what}: JSON listings differ");
    }
}

/// What the script leaves out (IPv6 affinity updates, which nft 1.0 cannot load) is written
/// over netlink, lists with nft without error, and reads back as the model.
#[test]
fn netlink_writes_what_the_script_leaves_out() {
    if let Some(reason) = kernel_unavailable() {
        return skip("netlink_writes_what_the_script_leaves_out", &reason);
    }
    let (_, path) = common::scenarios()
        .into_iter()
        .find(|(n, _)| n == "dual-stack-affinity")
        .unwrap();
    let ruleset = compile(&path);
    assert!(
        !nfcompile::emit::text::left_out(&ruleset).is_empty(),
        "the scenario no longer needs netlink for anything"
    );
    let applied = ruleset.clone();
    let listing = in_fresh_netns(move || {
        apply(&applied).unwrap();
        nft(&["list", "ruleset"])
    });
    assert!(
        listing.contains(
            "update @affinity { ip6 saddr . ct original ip6 daddr . meta l4proto . \
             ct original proto-dst timeout"
        ),
        "{listing}"
    );
    assert_round_trip("dual-stack-affinity", ruleset);
}

#[test]
fn a_failing_batch_changes_nothing_and_names_the_culprit() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "a_failing_batch_changes_nothing_and_names_the_culprit",
            &reason,
        );
    }
    let good = compile(
        &common::scenarios()
            .into_iter()
            .find(|(n, _)| n == "two-node-cluster")
            .unwrap()
            .1,
    );
    let mut bad = good.clone();
    // The very last element of the batch points at a chain that does not exist.
    let last_set = bad.tables[0]
        .sets
        .iter_mut()
        .find(|s| s.name == "service-nodeports")
        .unwrap();
    let mut el = last_set.elements[0].clone();
    el.key[1] = nfcompile::model::Value::Port(31999);
    el.data = Some(ElementData::Verdict(Verdict::Goto("no-such-chain".into())));
    last_set.elements.push(el);
    let (before, after, err) = in_fresh_netns(move || {
        apply(&good).unwrap();
        let before = nft(&["list", "ruleset"]);
        let err = apply(&bad).unwrap_err();
        (before, nft(&["list", "ruleset"]), err)
    });
    assert_eq!(
        before, after,
        "a refused batch must leave the ruleset byte-for-byte unchanged"
    );
    match err {
        ApplyError::Rejected { what, .. } => assert!(what.contains("service-nodeports"), "{what}"),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn a_rule_with_a_missing_chain_names_it() {
    if let Some(reason) = kernel_unavailable() {
        return skip("a_rule_with_a_missing_chain_names_it", &reason);
    }
    let mut bad = compile(
        &common::scenarios()
            .into_iter()
            .find(|(n, _)| n == "hairpin")
            .unwrap()
            .1,
    );
    let services = bad.tables[0]
        .chains
        .iter_mut()
        .find(|c| c.name == "services")
        .unwrap();
    services.rules.push(nfcompile::model::Rule {
        matches: vec![],
        statements: vec![nfcompile::model::Statement::Verdict(Verdict::Jump(
            "missing-chain".into(),
        ))],
        comment: None,
    });
    let err = in_fresh_netns(move || apply(&bad).unwrap_err()).to_string();
    assert!(
        err.contains("chain services") && err.contains("missing-chain"),
        "{err}"
    );
}

fn assert_round_trip(what: &str, ruleset: Ruleset) {
    let mut want = ruleset.clone();
    let mut got = in_fresh_netns(move || {
        apply(&ruleset).unwrap();
        readback().unwrap()
    });
    normalize(&mut want);
    normalize(&mut got);
    if want != got {
        let a = nfcompile::emit::text::write_string(&want);
        let b = nfcompile::emit::text::write_string(&got);
        panic!(
            "{what}: readback differs from what was applied:\n{}",
            common::first_differences(&a, &b)
        );
    }
}

#[test]
fn readback_of_an_apply_is_the_applied_model() {
    if let Some(reason) = kernel_unavailable() {
        return skip("readback_of_an_apply_is_the_applied_model", &reason);
    }
    for (name, path) in common::scenarios() {
        assert_round_trip(&name, compile(&path));
    }
    for (what, ruleset) in generated() {
        assert_round_trip(&what, ruleset);
    }
}

#[test]
fn readback_of_an_empty_namespace_is_empty_and_foreign_tables_are_ignored() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "readback_of_an_empty_namespace_is_empty_and_foreign_tables_are_ignored",
            &reason,
        );
    }
    let (empty, with_foreign, foreign_after) = in_fresh_netns(|| {
        let empty = readback().unwrap();
        nft(&["add", "table", "ip", "someone-else"]);
        nft(&["add", "chain", "ip", "someone-else", "c"]);
        let with_foreign = readback().unwrap();
        (empty, with_foreign, nft(&["list", "ruleset"]))
    });
    assert!(empty.tables.is_empty());
    assert!(with_foreign.tables.is_empty());
    assert!(foreign_after.contains("someone-else"));
}

#[test]
fn a_netlink_transaction_turns_the_kernels_ruleset_into_the_desired_one() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "a_netlink_transaction_turns_the_kernels_ruleset_into_the_desired_one",
            &reason,
        );
    }
    let all = generated();
    let mut pairs: Vec<(String, Ruleset, Ruleset)> = Vec::new();
    for w in all.windows(2) {
        pairs.push((
            format!("{} → {}", w[0].0, w[1].0),
            w[0].1.clone(),
            w[1].1.clone(),
        ));
    }
    for seed in 1..=8u64 {
        let a = nfcompile::synth::random(seed, 25);
        let mut b = a.clone();
        b.services.retain(|s| !s.name.ends_with('7'));
        for (i, s) in b.services.iter_mut().enumerate() {
            if i % 3 == 0 {
                s.endpoints.truncate(2);
            }
        }
        // Counters turned on or off for some: NEWOBJ, or DELOBJ after the elements go.
        if seed % 3 == 0 {
            b.config.counters = !b.config.counters;
        }
        pairs.push((
            format!("seed {seed} edited"),
            nfcompile::compile(&a).unwrap(),
            nfcompile::compile(&b).unwrap(),
        ));
    }
    for (what, a, b) in pairs {
        let want = b.clone();
        let (mut got, messages) = in_fresh_netns(move || {
            apply(&a).unwrap();
            let (live, generation) = nfcompile_netlink::readback_with_generation().unwrap();
            let tx = nfcompile::diff::diff(&live, &b);
            let s = apply_transaction(&tx, &b, Some(generation)).unwrap_or_else(|e| panic!("{e}"));
            // Nothing left to do afterwards.
            let again = nfcompile::diff::diff(&readback().unwrap(), &b);
            assert!(
                again.is_empty(),
                "a second diff is not empty: {:?}",
                again.ops.len()
            );
            (readback().unwrap(), s.messages)
        });
        normalize(&mut got);
        // Objects created by a transaction come after the others in the kernel's lists.
        let (got, want) = (
            nfcompile::diff::canonical(&got),
            nfcompile::diff::canonical(&want),
        );
        if got != want {
            let (a, b) = (
                nfcompile::emit::text::write_string(&want),
                nfcompile::emit::text::write_string(&got),
            );
            panic!(
                "{what}: readback after the transaction differs:\n{}",
                common::first_differences(&a, &b)
            );
        }
        assert!(messages > 0, "{what}");
    }
}

#[test]
fn a_transaction_planned_on_a_stale_read_is_refused() {
    if let Some(reason) = kernel_unavailable() {
        return skip("a_transaction_planned_on_a_stale_read_is_refused", &reason);
    }
    let all = generated();
    let (a, b) = (all[0].1.clone(), all[1].1.clone());
    let (err, before, after) = in_fresh_netns(move || {
        apply(&a).unwrap();
        let (live, generation) = nfcompile_netlink::readback_with_generation().unwrap();
        // Someone else changes the ruleset between our read and our commit.
        nft(&["add", "table", "ip", "someone-else"]);
        let before = nft(&["list", "ruleset"]);
        let tx = nfcompile::diff::diff(&live, &b);
        let err = apply_transaction(&tx, &b, Some(generation)).unwrap_err();
        (err, before, nft(&["list", "ruleset"]))
    });
    assert!(matches!(err, ApplyError::Changed { .. }), "{err}");
    assert!(err.to_string().contains("plan again"));
    assert_eq!(before, after);
}

#[test]
fn the_syncer_commits_differences_and_repairs_drift() {
    if let Some(reason) = kernel_unavailable() {
        return skip("the_syncer_commits_differences_and_repairs_drift", &reason);
    }
    let all = generated();
    let (a, b) = (all[4].1.clone(), all[5].1.clone());
    // The second sync keeps the sizes of a's sets where b's elements fit.
    let mut want = b.clone();
    nfcompile::diff::keep_capacities(&a, &mut want);
    let (reports, drift, repaired, mut got) = in_fresh_netns(move || {
        let mut s = nfcompile_netlink::Syncer::new();
        let first = s.sync(a.clone()).unwrap();
        let again = s.sync(a).unwrap();
        let second = s.sync(b).unwrap();
        let clean = s.check_drift(false).unwrap();
        // Someone deletes a chain's rules behind our back.
        nft(&["flush", "chain", "ip", "nfcompile", "services"]);
        let drift = s.check_drift(false).unwrap();
        let repaired = s.check_drift(true).unwrap();
        let after = s.check_drift(false).unwrap();
        (
            (first, again, second, clean, after),
            drift,
            repaired,
            readback().unwrap(),
        )
    });
    let (first, again, second, clean, after) = reports;
    assert!(first.read_back && first.operations > 0);
    assert_eq!(again.operations, 0, "an unchanged sync must do nothing");
    assert!(
        !again.read_back && !second.read_back,
        "syncs after the first must not list the kernel"
    );
    assert!(second.operations > 0);
    assert_eq!(clean.operations, 0);
    assert!(drift.operations > 0, "drift not seen");
    assert!(repaired.operations > 0 && repaired.messages > 0);
    assert_eq!(after.operations, 0, "drift not repaired");
    normalize(&mut want);
    normalize(&mut got);
    assert!(nfcompile::diff::canonical(&got) == nfcompile::diff::canonical(&want));
}

/// Incremental updates through the handle: only the changed services are compiled, the
/// kernel ends up holding what the handle expects (checked by readback), and a change that
/// needs new sets falls back to a whole sync by itself.
#[test]
fn the_syncer_updates_single_services_incrementally() {
    if let Some(reason) = kernel_unavailable() {
        return skip("the_syncer_updates_single_services_incrementally", &reason);
    }
    use nfcompile::incremental::Change;
    let cluster = nfcompile::synth::random(7, 60);
    let (reports, drift) = in_fresh_netns(move || {
        let mut s = nfcompile_netlink::Syncer::new();
        let mut reports = vec![s.sync_cluster(cluster.clone()).unwrap()];
        // A service whose last endpoint is in use (ready), so removing it changes something.
        let changing = (10..cluster.services.len())
            .find(|&i| {
                let e = &cluster.services[i].endpoints;
                e.len() >= 2 && e.iter().all(|e| e.ready)
            })
            .expect("a service with two ready endpoints");
        let mut svc = cluster.services[changing].clone();
        svc.endpoints.pop();
        reports.push(s.update(&[Change::Upsert(svc.clone())]).unwrap());
        svc.endpoints.clear(); // no endpoints: rejected
        reports.push(s.update(&[Change::Upsert(svc)]).unwrap());
        let gone = &cluster.services[11];
        reports.push(
            s.update(&[Change::Remove {
                namespace: gone.namespace.clone(),
                name: gone.name.clone(),
            }])
            .unwrap(),
        );
        // An affinity timeout no service had needs a chain of its own (and maybe the
        // affinity sets): a whole sync.
        let mut aff = cluster
            .services
            .iter()
            .find(|s| s.cluster_ips.iter().any(|ip| ip.is_ipv4()) && s.endpoints.len() > 1)
            .expect("an IPv4 service with endpoints")
            .clone();
        aff.session_affinity_timeout = Some(12345);
        reports.push(s.update(&[Change::Upsert(aff)]).unwrap());
        let mut svc = cluster.services[13].clone();
        svc.endpoints.truncate(1);
        reports.push(s.update(&[Change::Upsert(svc)]).unwrap());
        (reports, s.check_drift(false).unwrap())
    });
    assert!(!reports[0].incremental);
    for (i, r) in reports.iter().enumerate().skip(1) {
        assert!(!r.read_back, "update {i} listed the kernel: {r:?}");
    }
    assert!(
        reports[1].incremental && reports[1].operations > 0,
        "{:?}",
        reports[1]
    );
    assert!(reports[2].incremental && reports[3].incremental);
    assert!(
        !reports[4].incremental,
        "a new affinity chain needs a whole sync: {:?}",
        reports[4]
    );
    assert!(reports[5].incremental);
    assert_eq!(
        drift.operations, 0,
        "the kernel holds something else than the handle expects"
    );
}

#[test]
fn sets_are_sized_and_the_syncer_grows_them_before_the_kernel_refuses() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "sets_are_sized_and_the_syncer_grows_them_before_the_kernel_refuses",
            &reason,
        );
    }
    use nfcompile::incremental::Change;
    use nfcompile::synth::one_service;
    let endpoints_size = |rs: &Ruleset| {
        let set = rs.tables[0].set("endpoints").expect("endpoints map");
        (set.size, set.elements.len())
    };
    let upsert = |n: usize| Change::Upsert(one_service(n).services[0].clone());
    let (reports, sizes, overfull) = in_fresh_netns(move || {
        let mut s = nfcompile_netlink::Syncer::new();
        let mut reports = vec![s.sync_cluster(one_service(100)).unwrap()];
        let mut sizes = vec![endpoints_size(&readback().unwrap())];
        // 256 fit the size 256 the set was given; 300 do not: a whole sync resizes it.
        for n in [256, 300, 200] {
            reports.push(s.update(&[upsert(n)]).unwrap());
            sizes.push(endpoints_size(&readback().unwrap()));
        }
        // The kernel itself refuses an element past the size (so the refusal above is
        // needed): a set of size 256 given 300 elements in one transaction.
        let mut overfull = nfcompile::compile(&one_service(300)).unwrap();
        for set in &mut overfull.tables[0].sets {
            set.size = set.size.map(|_| 256);
        }
        overfull.tables[0].name = "overfull".into();
        let err = apply(&overfull).map(|_| ()).unwrap_err().to_string();
        (reports, sizes, err)
    });
    assert_eq!(sizes[0], (Some(256), 100));
    assert!(reports[1].incremental, "{:?}", reports[1]);
    assert_eq!(sizes[1], (Some(256), 256));
    assert!(
        !reports[2].incremental,
        "300 > 256 needs a whole sync: {:?}",
        reports[2]
    );
    assert_eq!(sizes[2], (Some(512), 300));
    // Fewer again: the set keeps its size (recreating it would reload every element).
    assert!(reports[3].incremental, "{:?}", reports[3]);
    assert_eq!(sizes[3], (Some(512), 200));
    eprintln!("an overfull set: {overfull}");
    assert!(
        overfull.contains("elements of set endpoints") && overfull.contains("the set is full"),
        "the refused element's set is named, with ENFILE: {overfull}"
    );
}

#[test]
fn a_refused_counter_is_named_though_counters_are_not_acknowledged() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "a_refused_counter_is_named_though_counters_are_not_acknowledged",
            &reason,
        );
    }
    let good = compile(
        &common::scenarios()
            .into_iter()
            .find(|(n, _)| n == "counters")
            .unwrap()
            .1,
    );
    let mut bad = good.clone();
    // Longer than NFT_OBJ_MAXNAMELEN: the kernel refuses it.
    bad.tables[0]
        .counters
        .push(format!("traffic/{}", "x".repeat(300)));
    let (listed, err) = in_fresh_netns(move || {
        apply(&good).unwrap();
        let err = apply(&bad).unwrap_err();
        (nft(&["list", "counters"]), err)
    });
    match err {
        ApplyError::Rejected { what, .. } => {
            assert!(what.starts_with("counter traffic/xxx"), "{what}")
        }
        other => panic!("unexpected {other}"),
    }
    assert!(listed.contains("counter traffic/default/web/tcp/http"));
    assert!(!listed.contains("xxxx"));
}

/// A set in our table that the model cannot hold is an error naming it, not a wrong ruleset,
/// and the next readback on a fixed table works.
#[test]
fn readback_names_a_set_it_cannot_read() {
    if let Some(reason) = kernel_unavailable() {
        return skip("readback_names_a_set_it_cannot_read", &reason);
    }
    let (err, after) = in_fresh_netns(|| {
        nft(&["add table ip nfcompile; add map ip nfcompile limits { type ipv4_addr : quota; }"]);
        let err = readback().unwrap_err();
        nft(&["delete map ip nfcompile limits"]);
        (err, readback())
    });
    match err {
        ReadbackError::Decode { what, source } => {
            assert_eq!(what, "set limits");
            assert!(source.to_string().contains("not counters"), "{source}");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(after.unwrap().tables.len(), 1);
}

/// Packets and bytes of the counter `name` in table `ip nfcompile`, as nft lists them.
fn counted(name: &str) -> (u64, u64) {
    let out = nft(&["list", "counter", "ip", "nfcompile", name]);
    let n = |after: &str| -> u64 {
        let at = out.find(after).unwrap_or_else(|| panic!("{out}")) + after.len();
        out[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (n("packets "), n("bytes "))
}

#[test]
fn the_syncer_keeps_counting_through_incremental_updates() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "the_syncer_keeps_counting_through_incremental_updates",
            &reason,
        );
    }
    use nfcompile::incremental::Change;
    let mut cluster = nfcompile::synth::cluster(nfcompile::synth::Shape {
        services: 30,
        endpoints: 3,
        nodes: 3,
    });
    cluster.config.counters = true;
    let svc = cluster.services[4].clone();
    let ip = svc.cluster_ips[0];
    let port = svc.ports[0].clone();
    let name = nfcompile::layout::counters::ServicePortName::of(&svc, &port);
    let (traffic, connections) = (
        name.counter(nfcompile::layout::counters::CounterKind::Traffic),
        name.counter(nfcompile::layout::counters::CounterKind::Connections),
    );
    let traffic_name = traffic.clone();
    let (before, after, reports, listed) = in_fresh_netns(move || {
        // A route out, so the node's own packets to the cluster IP reach the output hook:
        // DNATed there, counted after it, then sent out of a veth pair.
        let sh = |cmd: &str| {
            let ok = Command::new("sh")
                .args(["-c", cmd])
                .status()
                .unwrap()
                .success();
            assert!(ok, "{cmd}");
        };
        sh("ip link add v0 type veth peer name v1 && ip addr add 10.255.0.1/8 dev v0 && ip link set v0 up && ip link set v1 up && ip route add default dev v0");
        let mut s = nfcompile_netlink::Syncer::new();
        let mut reports = vec![s.sync_cluster(cluster.clone()).unwrap()];
        assert_eq!(port.protocol, nfcompile::ir::Protocol::Tcp);
        // Connection attempts (nothing answers on the veth pair): one SYN each.
        let connect = |n: usize| {
            for _ in 0..n {
                let _ = std::net::TcpStream::connect_timeout(
                    &(ip, port.port as u16).into(),
                    std::time::Duration::from_millis(50),
                );
            }
        };
        connect(3);
        let before = (counted(&connections), counted(&traffic));
        // An endpoint less, then another service changed: incremental, counters untouched.
        let mut fewer = svc.clone();
        fewer.endpoints.pop();
        reports.push(s.update(&[Change::Upsert(fewer)]).unwrap());
        let mut other = cluster.services[9].clone();
        other.endpoints.pop();
        reports.push(s.update(&[Change::Upsert(other)]).unwrap());
        let kept = (counted(&connections), counted(&traffic));
        connect(2);
        let after = (counted(&connections), counted(&traffic));
        (before, (kept, after), reports, nft(&["list", "counters"]))
    });
    let ((kept, after), before) = (after, before);
    assert!(reports[1..].iter().all(|r| r.incremental), "{reports:?}");
    assert_eq!(before.0 .0, 3, "3 connection attempts: {before:?}");
    assert!(
        before.1 .0 >= 3,
        "their SYNs were counted as traffic: {before:?}"
    );
    assert_eq!(kept, before, "an incremental update reset the counters");
    assert_eq!(after.0 .0, 5);
    assert!(listed.contains(&format!("counter {traffic_name}")));
}
