//! One stage, five times, on a 2,000-service cluster (× 5 endpoints over 10 nodes), for
//! instruction counts that do not depend on the machine's noise:
//! `valgrind --tool=cachegrind --cache-sim=no target/release/examples/count_stages STAGE`
//! with STAGE compile, render, encode, diff (no change) or setup (the cluster and one compile
//! alone, to subtract). Results: benches/results/.
use nfcompile::synth::{cluster, Shape};

fn main() {
    let stage = std::env::args()
        .nth(1)
        .expect("usage: count_stages compile|render|encode|diff");
    let c = cluster(Shape {
        services: 2000,
        endpoints: 5,
        nodes: 10,
    });
    let rs = nfcompile::compile(&c).unwrap();
    let n = match stage.as_str() {
        "compile" => (0..5)
            .map(|_| nfcompile::compile(&c).unwrap().tables.len())
            .sum::<usize>(),
        "render" => (0..5)
            .map(|_| nfcompile::emit::text::write_string(&rs).len())
            .sum(),
        "encode" => (0..5)
            .map(|_| nfcompile_netlink::encode::encode(&rs).messages)
            .sum(),
        "setup" => 0,
        _ => {
            let same = rs.clone();
            (0..5)
                .map(|_| nfcompile::diff::diff(&rs, &same).ops.len())
                .sum()
        }
    };
    println!("{stage} {n}");
}
