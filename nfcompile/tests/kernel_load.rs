//! Every golden `nft -f` script must load into a real kernel, in a fresh network namespace.

use nfcompile_test_support as common;

use common::{kernel_unavailable, skip, Netns};

#[test]
fn every_golden_script_loads_into_the_kernel() {
    if let Some(reason) = kernel_unavailable() {
        return skip("every_golden_script_loads_into_the_kernel", &reason);
    }
    let mut loaded = 0;
    for (name, _) in common::scenarios() {
        let file = common::golden_dir("nft").join(format!("{name}.nft"));
        let ns = Netns::new(&name);
        ns.nft_load(&file)
            .unwrap_or_else(|e| panic!("{}: nft -f refused it:\n{e}", file.display()));
        let listing = ns.nft(&["list", "table", "ip", "nfcompile"]);
        let listing6 = ns.nft(&["list", "table", "ip6", "nfcompile"]);
        assert!(
            listing.is_ok() || listing6.is_ok(),
            "{name}: no nfcompile table after loading"
        );
        // Loading the same script again replaces the tables atomically.
        ns.nft_load(&file)
            .unwrap_or_else(|e| panic!("{}: reloading failed:\n{e}", file.display()));
        assert_no_refused_byteorder(&ns, &file);
        loaded += 1;
    }
    assert!(loaded >= 12);
    eprintln!("kernel accepted {loaded} golden scripts (each loaded twice)");
}

/// Linux refuses a byteorder instruction whose length differs from its size since 6.12.115
/// ("nft_byteorder: remove multi-register support"); nft before 1.1.0 emits one for an
/// `inet_proto` inside an interval concatenation. The bytecode nft encodes for `file`
/// (`nft --debug=netlink --check`) must have none, so the script loads on every kernel.
fn assert_no_refused_byteorder(ns: &Netns, file: &std::path::Path) {
    let out = ns.exec(&[
        "nft",
        "--debug=netlink",
        "--check",
        "-f",
        file.to_str().unwrap(),
    ]);
    let bytecode =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {bytecode}", file.display());
    for line in bytecode.lines().filter(|l| l.contains("[ byteorder ")) {
        // `[ byteorder reg 9 = hton(reg 9, 2, 1) ]`: size 2, length 1.
        let args = line
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(args, _)| args)
            .unwrap_or_else(|| panic!("{}: unexpected line {line}", file.display()));
        let numbers: Vec<&str> = args.split(',').map(str::trim).collect();
        assert!(
            numbers.len() == 3 && numbers[1] == numbers[2],
            "{}: nft encodes a byteorder of length ≠ size, which Linux 6.12.115+ refuses: {line}",
            file.display()
        );
    }
}

/// The first fuzz target's promise that an accepted input never renders a script `nft -f`
/// refuses, checked on its seed corpus: the scenarios plus inputs a fuzzing run produced
/// (`fuzz/seeds/compile_input/fuzzed-*`, kept because they compile).
#[test]
fn fuzzed_inputs_that_compile_load_into_the_kernel() {
    if let Some(reason) = kernel_unavailable() {
        return skip("fuzzed_inputs_that_compile_load_into_the_kernel", &reason);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/compile_input");
    let ns = Netns::new("fuzzed");
    let tmp = std::env::temp_dir().join(format!("nfc-fuzzed-{}.nft", std::process::id()));
    let (mut loaded, mut fuzzed) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let source = nfcompile::front::Source {
            name: path.display().to_string(),
            text,
        };
        for node in [None, Some("node-a")] {
            if let Ok((ruleset, _)) =
                nfcompile::compile_sources(std::slice::from_ref(&source), node)
            {
                std::fs::write(&tmp, nfcompile::emit::text::write_string(&ruleset)).unwrap();
                if let Err(e) = ns.nft_load(&tmp) {
                    panic!(
                        "{} (node {node:?}) compiles but nft -f refuses it: {e}",
                        path.display()
                    );
                }
                loaded += 1;
                fuzzed += usize::from(
                    path.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("fuzzed-"),
                );
            }
        }
    }
    let _ = std::fs::remove_file(&tmp);
    assert!(
        loaded >= 12 && fuzzed > 0,
        "only {loaded} scripts ({fuzzed} fuzzed) loaded"
    );
}

#[test]
fn a_replaced_ruleset_leaves_nothing_of_the_old_one() {
    if let Some(reason) = kernel_unavailable() {
        return skip("a_replaced_ruleset_leaves_nothing_of_the_old_one", &reason);
    }
    let ns = Netns::new("replace");
    let dir = common::golden_dir("nft");
    ns.nft_load(&dir.join("affinity.nft")).unwrap();
    assert!(ns
        .nft(&["list", "map", "ip", "nfcompile", "affinity"])
        .is_ok());
    ns.nft_load(&dir.join("hairpin.nft")).unwrap();
    // The affinity layout is gone: the table was replaced, not merged.
    assert!(ns
        .nft(&["list", "map", "ip", "nfcompile", "affinity"])
        .is_err());
    let listing = ns.nft(&["list", "table", "ip", "nfcompile"]).unwrap();
    assert!(listing.contains("10.96.10.1 . tcp . 80"), "{listing}");
}

/// Pairs of clusters: edits of a random cluster, and two unrelated ones.
fn pairs() -> Vec<(String, nfcompile::model::Ruleset, nfcompile::model::Ruleset)> {
    let mut out = Vec::new();
    for seed in 1..=6u64 {
        let a = nfcompile::synth::random(seed, 25);
        let mut b = a.clone();
        b.services.retain(|s| !s.name.ends_with('3'));
        for (i, s) in b.services.iter_mut().enumerate() {
            if i % 4 == 0 {
                s.endpoints.truncate(1);
            }
            if i % 5 == 0 {
                s.session_affinity_timeout = s.session_affinity_timeout.xor(Some(120));
            }
        }
        b.config.masquerade_all = !b.config.masquerade_all;
        // Counters turned on or off: objects created, or deleted after their map elements.
        if seed % 2 == 0 {
            b.config.counters = !b.config.counters;
        }
        let c = nfcompile::synth::random(seed + 1000, 25);
        let (a, b, c) = (
            nfcompile::compile(&a).unwrap(),
            nfcompile::compile(&b).unwrap(),
            nfcompile::compile(&c).unwrap(),
        );
        out.push((format!("seed {seed} edited"), a.clone(), b));
        out.push((format!("seed {seed} unrelated"), a, c));
    }
    out
}

#[test]
fn a_text_transaction_turns_one_ruleset_into_the_other() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "a_text_transaction_turns_one_ruleset_into_the_other",
            &reason,
        );
    }
    let dir = std::env::temp_dir().join(format!("nfc-tx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (what, a, b) in pairs() {
        let (fa, fb, ft) = (dir.join("a.nft"), dir.join("b.nft"), dir.join("tx.nft"));
        std::fs::write(&fa, nfcompile::emit::text::write_string(&a)).unwrap();
        std::fs::write(&fb, nfcompile::emit::text::write_string(&b)).unwrap();
        let tx = nfcompile::diff::diff(&a, &b);
        std::fs::write(&ft, nfcompile::emit::text::write_transaction(&tx, &b)).unwrap();
        let incremental = Netns::new("txa");
        incremental.nft_load(&fa).unwrap();
        incremental
            .nft_load(&ft)
            .unwrap_or_else(|e| panic!("{what}: the transaction was refused:\n{e}"));
        let direct = Netns::new("txb");
        direct.nft_load(&fb).unwrap();
        let (x, y) = (
            incremental.nft(&["list", "ruleset"]).unwrap(),
            direct.nft(&["list", "ruleset"]).unwrap(),
        );
        // Element order inside a listing follows the kernel's hash order, so compare sorted lines.
        let sorted = |s: &str| {
            let mut v: Vec<String> = s
                .lines()
                .map(|l| l.trim().trim_end_matches(',').to_string())
                .collect();
            v.sort();
            v
        };
        assert!(
            sorted(&x) == sorted(&y),
            "{what}: incremental and direct listings differ"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
