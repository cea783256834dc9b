#[path = "../../nfcompile/tests/common/reference.rs"]
mod reference;
use std::time::Instant;
fn main() {
    for n in [1usize, 3, 6, 12] {
        let clusters: Vec<_> = (0..200).map(|s| nfcompile::synth::random(s, n)).collect();
        let t = Instant::now();
        let rs: Vec<_> = clusters
            .iter()
            .map(|c| nfcompile::compile(c).unwrap())
            .collect();
        let comp = t.elapsed() / 200;
        let t = Instant::now();
        for r in &rs {
            nfcompile_netlink::decode::round_trip(r).unwrap();
        }
        let rt = t.elapsed() / 200;
        let t = Instant::now();
        let mut pk = 0;
        for c in &clusters {
            pk += reference::check(c).unwrap();
        }
        let ck = t.elapsed() / 200;
        let t = Instant::now();
        for w in rs.windows(2) {
            let tx = nfcompile::diff::diff(&w[0], &w[1]);
            let g = nfcompile::diff::apply(&w[0], &tx).unwrap();
            assert!(nfcompile::diff::canonical(&g) == nfcompile::diff::canonical(&w[1]));
        }
        let df = t.elapsed() / 199;
        let els: usize = rs
            .iter()
            .map(|r| {
                r.tables
                    .iter()
                    .map(|t| t.sets.iter().map(|s| s.elements.len()).sum::<usize>())
                    .sum::<usize>()
            })
            .sum::<usize>()
            / 200;
        let rules: usize = rs
            .iter()
            .map(|r| {
                r.tables
                    .iter()
                    .map(|t| t.chains.iter().map(|c| c.rules.len()).sum::<usize>())
                    .sum::<usize>()
            })
            .sum::<usize>()
            / 200;
        println!("n={n}: compile {comp:?} round_trip {rt:?} check {ck:?} ({} pkts) diff {df:?}; {els} elements, {rules} rules", pk / 200);
    }
}
