//! Write a.nft, b.nft and tx.nft (diff(a, b)) for two seeded random clusters, for debugging.
fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let a = nfcompile::compile(&nfcompile::synth::random(args[0], 25)).unwrap();
    let b = nfcompile::compile(&nfcompile::synth::random(args[1], 25)).unwrap();
    std::fs::write("/tmp/a.nft", nfcompile::emit::text::write_string(&a)).unwrap();
    std::fs::write("/tmp/b.nft", nfcompile::emit::text::write_string(&b)).unwrap();
    std::fs::write(
        "/tmp/tx.nft",
        nfcompile::emit::text::write_transaction(&nfcompile::diff::diff(&a, &b), &b),
    )
    .unwrap();
}
