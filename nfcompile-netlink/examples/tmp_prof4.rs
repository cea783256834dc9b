fn main() {
    let rs: Vec<_> = (0..300)
        .map(|s| nfcompile::compile(&nfcompile::synth::random(s, 3)).unwrap())
        .collect();
    for _ in 0..5 {
        for w in rs.windows(2) {
            assert!(nfcompile::diff::diff(&w[0], &w[0]).is_empty());
            for (a, b) in [(&w[0], &w[1]), (&w[1], &w[0])] {
                let tx = nfcompile::diff::diff(a, b);
                let g = nfcompile::diff::apply(a, &tx).unwrap();
                assert!(nfcompile::diff::canonical(&g) == nfcompile::diff::canonical(b));
            }
        }
    }
}
