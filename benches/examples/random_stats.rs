//! Print what a seeded random cluster contains (for checking test coverage by eye).
fn main() {
    for seed in 1..=16u64 {
        let c = nfcompile::synth::random(seed, 30);
        let rs = nfcompile::compile(&c).unwrap();
        let text = nfcompile::emit::text::write_string(&rs);
        let has = |s: &'static str| if text.contains(s) { s } else { "-" };
        println!(
            "seed {seed:2}: tables {} elements {:4} | {} {} {} {} {} {} {}",
            rs.tables.len(),
            rs.tables
                .iter()
                .flat_map(|t| &t.sets)
                .map(|s| s.elements.len())
                .sum::<usize>(),
            has("affinity-lookup"),
            has("firewall-allow"),
            has("local-endpoints"),
            has("reject-chain"),
            has("iifname"),
            has("fib daddr"),
            has("sctp")
        );
    }
}
