//! The peers' rulesets for the scale benchmark's synthetic cluster (the same one
//! `nfcompile-synth` writes). Usage: peer-rules kube-nftables|kube-iptables SERVICES [ENDPOINTS] [NODES]

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| {
        args.get(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let shape = nfcompile::synth::Shape {
        services: num(1, 1000),
        endpoints: num(2, 5),
        nodes: num(3, 10),
    };
    let cluster = nfcompile::synth::cluster(shape);
    let out = match args.first().map(String::as_str) {
        Some("kube-nftables") => nfcompile_benches::peers::kube_nftables::script(&cluster),
        Some("kube-iptables") => nfcompile_benches::peers::kube_iptables::restore_input(&cluster),
        _ => {
            eprintln!("usage: peer-rules kube-nftables|kube-iptables SERVICES [ENDPOINTS] [NODES]");
            std::process::exit(2);
        }
    };
    std::io::stdout().lock().write_all(out.as_bytes()).unwrap();
}
