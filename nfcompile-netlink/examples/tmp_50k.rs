use std::time::Instant;
fn main() {
    let c = nfcompile::synth::cluster(nfcompile::synth::Shape {
        services: 50_000,
        endpoints: 5,
        nodes: 10,
    });
    for _ in 0..3 {
        let t = Instant::now();
        let r = nfcompile::compile(&c).unwrap();
        let tc = t.elapsed();
        let t = Instant::now();
        let tx = nfcompile::diff::diff(&r, &r);
        println!(
            "compile {tc:?} diff(a,a) {:?} {}",
            t.elapsed(),
            tx.is_empty()
        );
    }
}
