//! Profile one-endpoint diffs at scale: `perf record cargo run --release --example diff_profile`.
fn main() {
    let n = 50_000;
    let full = nfcompile::synth::cluster(nfcompile::synth::Shape {
        services: n,
        endpoints: 5,
        nodes: 10,
    });
    let mut less = full.clone();
    less.services[n / 2].endpoints.pop();
    let (a, b) = (
        nfcompile::compile(&full).unwrap(),
        nfcompile::compile(&less).unwrap(),
    );
    let t = std::time::Instant::now();
    for _ in 0..50 {
        std::hint::black_box(nfcompile::diff::diff(&a, &b));
    }
    println!("diff: {:.2} ms", t.elapsed().as_secs_f64() * 20.0);
}
