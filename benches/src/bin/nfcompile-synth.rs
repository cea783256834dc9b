//! Print a synthetic cluster of the given size as an `nft -f` script (or as native IR), for
//! `benches/scale.sh`. Usage: nfcompile-synth SERVICES [ENDPOINTS] [NODES] [--ir]
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| {
        args.get(i)
            .filter(|a| !a.starts_with("--"))
            .map(|a| a.parse().expect("a number"))
            .unwrap_or(default)
    };
    let shape = nfcompile::synth::Shape {
        services: num(0, 1000),
        endpoints: num(1, 5),
        nodes: num(2, 10),
    };
    let cluster = nfcompile::synth::cluster(shape);
    let out = if args.iter().any(|a| a == "--ir") {
        let mut v = serde_json::to_value(&cluster).unwrap();
        v["apiVersion"] = nfcompile::front::NATIVE_API_VERSION.into();
        v["kind"] = "Cluster".into();
        serde_json::to_string(&v).unwrap()
    } else {
        let ruleset = nfcompile::compile(&cluster).expect("generated clusters are valid");
        nfcompile::emit::text::write_string(&ruleset)
    };
    std::io::stdout().lock().write_all(out.as_bytes()).unwrap();
}
