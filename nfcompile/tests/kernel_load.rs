//! Every golden `nft -f` script must load into a real kernel, in a fresh network namespace.

mod common;

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
        loaded += 1;
    }
    assert!(loaded >= 12);
    eprintln!("kernel accepted {loaded} golden scripts (each loaded twice)");
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
