//! The diff's contract on arbitrary pairs of compiled clusters: applying diff(a, b) to a gives b
//! (checked by the model's own replay, with the kernel's reference rules), diff(a, a) is empty,
//! and the way back works too. Pairs are either unrelated clusters or a cluster and an edit of
//! it (services dropped, endpoints dropped, policies flipped), the common case for a proxy.
#![no_main]

mod choices;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use nfcompile::diff::{apply, canonical, canonicalize, diff};
use nfcompile::synth::{random_from, Choices};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut c = choices::Bytes(&mut u);
    let services = 1 + c.below(4) as usize;
    let a = random_from(&mut c, services);
    let b = if c.chance(30) {
        let services = 1 + c.below(4) as usize;
        random_from(&mut c, services)
    } else {
        let mut b = a.clone();
        for _ in 0..c.below(4) {
            let n = b.services.len() as u64;
            if n == 0 {
                break;
            }
            let i = c.below(n) as usize;
            match c.below(4) {
                0 => {
                    b.services.remove(i);
                }
                1 => {
                    b.services[i].endpoints.pop();
                }
                2 => {
                    b.services[i].session_affinity_timeout =
                        b.services[i].session_affinity_timeout.xor(Some(300));
                }
                _ => {
                    let s = &mut b.services[i];
                    s.external_traffic_policy = match s.external_traffic_policy {
                        nfcompile::ir::TrafficPolicy::Cluster => {
                            nfcompile::ir::TrafficPolicy::Local
                        }
                        _ => nfcompile::ir::TrafficPolicy::Cluster,
                    };
                }
            }
        }
        b
    };
    let (Ok(ma), Ok(mb)) = (nfcompile::compile(&a), nfcompile::compile(&b)) else {
        panic!("generated clusters always compile");
    };
    assert!(diff(&ma, &ma).is_empty(), "diff(a, a) is not empty");
    let (ca, cb) = (canonical(&ma), canonical(&mb));
    for (from, to, want) in [(&ma, &mb, &cb), (&mb, &ma, &ca)] {
        let tx = diff(from, to);
        let mut got =
            apply(from, &tx).unwrap_or_else(|e| panic!("transaction not applicable: {e}"));
        canonicalize(&mut got);
        assert!(got == *want, "apply(a, diff(a, b)) != b");
    }
});
