fn main() {
    let c = nfcompile::synth::cluster(nfcompile::synth::Shape {
        services: 5_000,
        endpoints: 5,
        nodes: 10,
    });
    let r = nfcompile::compile(&c).unwrap();
    for t in &r.tables {
        for s in &t.sets {
            println!(
                "{:?} {} {:?} key={:?} data={:?} {}",
                t.family,
                s.name,
                s.flags,
                s.key,
                s.data,
                s.elements.len()
            );
        }
        println!(
            "chains {} rules {}",
            t.chains.len(),
            t.chains.iter().map(|c| c.rules.len()).sum::<usize>()
        );
    }
    let e = &r.tables[0]
        .sets
        .iter()
        .find(|s| s.name.starts_with("endpoints"))
        .unwrap()
        .elements[..3];
    println!("{e:?}");
}
