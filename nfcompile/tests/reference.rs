//! The tracer over compiled rules against an independent reference model of kube-proxy's
//! semantics (`common/reference.rs`), for hundreds of random clusters; the fuzz target
//! `trace_reference` does the same for clusters shaped by the fuzzer.

use nfcompile_test_support as common;

#[test]
fn the_tracer_agrees_with_the_reference_model() {
    let mut packets = 0;
    let mut failures = Vec::new();
    for seed in 0..200 {
        let cluster = nfcompile::synth::random(seed, 10);
        match common::reference::check(&cluster) {
            Ok(n) => packets += n,
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 clusters disagree:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(packets > 10_000, "only {packets} packets checked");
    eprintln!("{packets} packets of 200 clusters agree");
}
