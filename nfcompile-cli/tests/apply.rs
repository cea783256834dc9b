//! `nfcompile apply` as an operator runs it, in throw-away network namespaces.

use nfcompile_test_support as common;

use std::process::Command;
use std::time::Instant;

use common::{kernel_unavailable, skip, Netns};

fn example() -> String {
    common::scenarios()
        .into_iter()
        .find(|(n, _)| n == "two-node-cluster")
        .unwrap()
        .1
        .to_string_lossy()
        .into_owned()
}

#[test]
fn without_cap_net_admin_apply_says_so_and_changes_nothing() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "without_cap_net_admin_apply_says_so_and_changes_nothing",
            &reason,
        );
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip("without_cap_net_admin…", "setpriv (util-linux) is missing");
    }
    let ns = Netns::new("nocap");
    let start = Instant::now();
    let out = ns.exec(&[
        "setpriv",
        "--bounding-set=-net_admin",
        env!("CARGO_BIN_EXE_nfcompile"),
        "apply",
        "-q",
        "-f",
        &example(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs CAP_NET_ADMIN"), "{stderr}");
    assert!(
        start.elapsed().as_secs() < 10,
        "the refusal must not wait for a time-out"
    );
    assert_eq!(ns.nft(&["list", "ruleset"]).unwrap(), "");
}

#[test]
fn apply_turns_the_previous_ruleset_into_the_new_one_and_reports_what_it_wrote() {
    if let Some(reason) = kernel_unavailable() {
        return skip(
            "apply_replaces_the_previous_ruleset_and_reports_what_it_wrote",
            &reason,
        );
    }
    let ns = Netns::new("replace");
    let affinity = common::scenarios()
        .into_iter()
        .find(|(n, _)| n == "affinity")
        .unwrap()
        .1;
    for input in [affinity.to_string_lossy().into_owned(), example()] {
        let out = ns.exec(&[env!("CARGO_BIN_EXE_nfcompile"), "apply", "-q", "-f", &input]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            line.starts_with("applied: ") && line.contains(" operations,") && line.contains(" ms"),
            "{line}"
        );
    }
    // Only the second ruleset is left: the affinity layout went with the old table.
    assert!(ns
        .nft(&["list", "map", "ip", "nfcompile", "affinity"])
        .is_err());
    let listing = ns.nft(&["list", "table", "ip", "nfcompile"]).unwrap();
    assert!(listing.contains("10.123.123.100 . tcp . 80"));
}

#[test]
fn apply_is_incremental_and_idempotent() {
    if let Some(reason) = kernel_unavailable() {
        return skip("apply_is_incremental_and_idempotent", &reason);
    }
    let ns = Netns::new("incr");
    let run = |file: &str| {
        let out = ns.exec(&[env!("CARGO_BIN_EXE_nfcompile"), "apply", "-q", "-f", file]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let example = example();
    run(&example);
    assert_eq!(run(&example), "No changes.");
    // One endpoint fewer: a handful of operations, not a reload.
    let text = std::fs::read_to_string(&example).unwrap();
    let edited = text.replace(
        "- {addresses: [10.42.1.2], conditions: {ready: true}, nodeName: vm2}\n",
        "",
    );
    assert_ne!(text, edited);
    let file = std::env::temp_dir().join(format!("nfc-incr-{}.yaml", std::process::id()));
    std::fs::write(&file, edited).unwrap();
    let line = run(file.to_str().unwrap());
    std::fs::remove_file(&file).unwrap();
    let ops: usize = line
        .trim_start_matches("applied: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ops <= 8, "{line}");
    let replace = ns.exec(&[
        env!("CARGO_BIN_EXE_nfcompile"),
        "apply",
        "--replace",
        "-q",
        "-f",
        &example,
    ]);
    assert!(String::from_utf8_lossy(&replace.stdout).starts_with("applied: 1 tables,"));
}
