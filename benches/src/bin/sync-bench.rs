//! One-endpoint changes at scale through the embedding handle, in a fresh network namespace.
//! Needs root. Usage: sync-bench [SERVICES] (default 50000; 5 endpoints per service).
//! Two desired models (with and without one endpoint of one service) are compiled up front;
//! each of 100 syncs alternates between them, so every sync is plan (diff) + apply.
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(50_000);
    let shape = nfcompile::synth::Shape {
        services: n,
        endpoints: 5,
        nodes: 10,
    };
    let full = nfcompile::synth::cluster(shape);
    let mut less = full.clone();
    less.services[n / 2].endpoints.pop();
    let (a, b) = (
        nfcompile::compile(&full).unwrap(),
        nfcompile::compile(&less).unwrap(),
    );
    std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare needs root");
        let mut syncer = nfcompile_netlink::Syncer::new();
        let first = syncer.sync(a.clone()).unwrap();
        println!("initial sync of {n} services: {:.3} s, {} messages", first.elapsed.as_secs_f64(), first.messages);
        let mut times: Vec<Duration> = Vec::new();
        let mut messages = Vec::new();
        let mut diff_times = Vec::new();
        for i in 0..100 {
            let desired = if i % 2 == 0 { b.clone() } else { a.clone() };
            let t = Instant::now();
            let tx = nfcompile::diff::diff(if i % 2 == 0 { &a } else { &b }, &desired);
            diff_times.push(t.elapsed());
            let r = syncer.sync(desired).unwrap();
            assert!(r.operations > 0 && !r.read_back);
            assert_eq!(r.operations, tx.ops.len());
            times.push(r.elapsed);
            messages.push(r.messages);
        }
        times.sort();
        diff_times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "one-endpoint change, {} syncs: p50 {:.2} ms, p99 {:.2} ms (of which diff p50 {:.2} ms); {}–{} netlink messages, {} operations",
            times.len(),
            ms(times[49]),
            ms(times[98]),
            ms(diff_times[49]),
            messages.iter().min().unwrap(),
            messages.iter().max().unwrap(),
            nfcompile::diff::diff(&a, &b).ops.len()
        );
        let t = Instant::now();
        let drift = syncer.check_drift(false).unwrap();
        println!("drift check (readback + diff): {:.3} s, {} operations", t.elapsed().as_secs_f64(), drift.operations);
    })
    .join()
    .unwrap();
}
