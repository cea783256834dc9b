//! Structured clusters, shaped by the fuzzer's bytes, compiled and traced: for the first
//! packets the bytes pick (a frontend and a kind of client each, out of every one the
//! reference enumerates), the tracer's verdict over the compiled rules must equal the small
//! reference model of kube-proxy's semantics in test-support/src/reference.rs, which is
//! written independently of the lowering. Tracing every packet of every cluster is what
//! `tests/reference.rs` does; here a few per execution keep the fuzzer fast, and coverage
//! decides which.
#![no_main]

mod choices;
use nfcompile_test_support::reference;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use nfcompile::synth::{random_from, Choices};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut c = choices::Bytes(&mut u);
    let services = 1 + c.below(3) as usize;
    let cluster = random_from(&mut c, services);
    let pick = |n: usize| {
        let picks = 1 + c.below(4);
        (0..picks).map(|_| c.below(n as u64) as usize).collect()
    };
    if let Err(e) = reference::check_some(&cluster, pick) {
        panic!("{e}");
    }
});
