//! Netlink encoding against the readback decoder on arbitrary compiled clusters: every rule's
//! instructions and every set's element bytes decode back to the model they came from.
#![no_main]

mod choices;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use nfcompile::synth::{random_from, Choices};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut c = choices::Bytes(&mut u);
    let services = 1 + c.below(4) as usize;
    let cluster = random_from(&mut c, services);
    let ruleset = nfcompile::compile(&cluster).expect("generated clusters always compile");
    if let Err(e) = nfcompile_netlink::decode::round_trip(&ruleset) {
        panic!("{e}");
    }
});
