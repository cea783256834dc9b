//! Structured clusters, shaped by the fuzzer's bytes, compiled and traced: for every frontend
//! and kind of client, the tracer's verdict over the compiled rules must equal the small
//! reference model of kube-proxy's semantics in nfcompile/tests/common/reference.rs, which is
//! written independently of the lowering.
#![no_main]

mod choices;
#[path = "../../nfcompile/tests/common/reference.rs"]
mod reference;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use nfcompile::synth::{random_from, Choices};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut c = choices::Bytes(&mut u);
    let services = 1 + c.below(6) as usize;
    let cluster = random_from(&mut c, services);
    if let Err(e) = reference::check(&cluster) {
        panic!("{e}");
    }
});
