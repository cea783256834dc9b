//! Compile + render throughput at 1k / 10k / 50k services × 5 endpoints over 10 nodes.
//! Goal: 50k × 5 in ≤ 0.5 s on one core (criterion runs single-threaded).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nfcompile::synth::{cluster, Shape};

fn compile_and_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile+render");
    group.sample_size(10);
    for services in [1_000, 10_000, 50_000] {
        let input = cluster(Shape {
            services,
            endpoints: 5,
            nodes: 10,
        });
        group.throughput(Throughput::Elements(services as u64));
        group.bench_with_input(BenchmarkId::from_parameter(services), &input, |b, input| {
            b.iter(|| {
                let ruleset = nfcompile::compile(input).unwrap();
                nfcompile::emit::text::write_string(&ruleset)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("stages-50k");
    group.sample_size(10);
    let input = cluster(Shape {
        services: 50_000,
        endpoints: 5,
        nodes: 10,
    });
    group.bench_function("validate", |b| {
        b.iter(|| nfcompile::validate::validate(&input).is_ok())
    });
    group.bench_function("compile", |b| {
        b.iter(|| nfcompile::compile(&input).unwrap())
    });
    let ruleset = nfcompile::compile(&input).unwrap();
    group.bench_function("render", |b| {
        b.iter(|| nfcompile::emit::text::write_string(&ruleset))
    });
    group.finish();
}

criterion_group!(benches, compile_and_render);
criterion_main!(benches);
