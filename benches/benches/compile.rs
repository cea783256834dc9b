//! The compiler's stages at 1k / 10k / 50k services × 5 endpoints over 10 nodes: compile
//! (validate + lower + optimize), render (`nft -f` text), diff (one endpoint removed from one
//! service, and no change at all) and netlink encode (the whole batch, no kernel).
//! Goal: compile + render of 50k in ≤ 0.5 s on one core (criterion runs single-threaded).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nfcompile::synth::{cluster, Shape};

const SIZES: [usize; 3] = [1_000, 10_000, 50_000];

fn input(services: usize) -> nfcompile::ir::Cluster {
    cluster(Shape {
        services,
        endpoints: 5,
        nodes: 10,
    })
}

fn stages(c: &mut Criterion) {
    for stage in [
        "compile",
        "render",
        "diff-one-endpoint",
        "diff-no-change",
        "netlink-encode",
    ] {
        let mut group = c.benchmark_group(stage);
        group.sample_size(10);
        for services in SIZES {
            let cluster = input(services);
            let ruleset = nfcompile::compile(&cluster).unwrap();
            group.throughput(Throughput::Elements(services as u64));
            let id = BenchmarkId::from_parameter(services);
            match stage {
                "compile" => {
                    group.bench_function(id, |b| b.iter(|| nfcompile::compile(&cluster).unwrap()))
                }
                "render" => group.bench_function(id, |b| {
                    b.iter(|| nfcompile::emit::text::write_string(&ruleset))
                }),
                "diff-one-endpoint" => {
                    let mut edited = cluster.clone();
                    edited.services[services / 2].endpoints.pop();
                    let desired = nfcompile::compile(&edited).unwrap();
                    group.bench_function(id, |b| {
                        b.iter(|| nfcompile::diff::diff(&ruleset, &desired))
                    })
                }
                "diff-no-change" => {
                    let same = ruleset.clone();
                    group.bench_function(id, |b| b.iter(|| nfcompile::diff::diff(&ruleset, &same)))
                }
                _ => group.bench_function(id, |b| {
                    b.iter(|| nfcompile_netlink::encode::encode(&ruleset))
                }),
            };
        }
        group.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
