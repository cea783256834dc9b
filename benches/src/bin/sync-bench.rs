//! One-endpoint changes at scale through the embedding handle, in a fresh network namespace.
//! Needs root. Usage: sync-bench [SERVICES] (default 50000; 5 endpoints per service).
//!
//! 1. `Syncer::update`: 100 changes alternating between one service with and without its last
//!    endpoint (the endpoint count changes), then 100 replacing one endpoint's address (the
//!    count stays) — each an incremental compile of that service, a diff and a commit.
//! 2. `Syncer::sync` with two whole models compiled up front: a whole diff and a commit.
use std::time::{Duration, Instant};

use nfcompile::incremental::Change;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentiles(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*times.last().unwrap())
    )
}

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
    std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare needs root");
        let mut syncer = nfcompile_netlink::Syncer::new();
        let t = Instant::now();
        let first = syncer.sync_cluster(full.clone()).unwrap();
        println!(
            "sync_cluster of {n} services: {:.3} s (compile, apply {} messages, index)",
            t.elapsed().as_secs_f64(),
            first.messages
        );
        // Services of each kind: plain cluster IP, node port, and load balancer with
        // externalTrafficPolicy Local and session affinity.
        let kinds = [("ClusterIP", n / 2 + 1), ("NodePort", 10), ("LoadBalancer+Local+affinity", n / 2)];
        for (change, replace) in [("one endpoint less/more", false), ("one endpoint replaced", true)] {
        for (what, i) in kinds {
            let with = full.services[i].clone();
            let mut without = with.clone();
            if replace {
                without.endpoints[4].address = "10.255.255.254".parse().unwrap();
            } else {
                without.endpoints.pop();
            }
            let cpu = || {
                let mut u: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
                let t = |v: libc::timeval| v.tv_sec as f64 * 1000.0 + v.tv_usec as f64 / 1000.0;
                (t(u.ru_utime), t(u.ru_stime))
            };
            let cpu_before = cpu();
            let mut times = Vec::new();
            let mut ops = Vec::new();
            let mut messages = Vec::new();
            for k in 0..100 {
                let s = if k % 2 == 0 { without.clone() } else { with.clone() };
                let r = syncer.update(&[Change::Upsert(s)]).unwrap();
                assert!(r.incremental && !r.read_back, "{r:?}");
                times.push(r.elapsed);
                ops.push(r.operations);
                messages.push(r.messages);
            }
            let cpu_after = cpu();
            print!(
                "  cpu per change: user {:.2} ms, kernel {:.2} ms; ",
                (cpu_after.0 - cpu_before.0) / 100.0,
                (cpu_after.1 - cpu_before.1) / 100.0
            );
            println!(
                "update(), {change} of a {what} service, 100 changes: {}; operations first {} then {}–{}; netlink messages {}–{} (+ batch begin/end)",
                percentiles(times),
                ops[0],
                ops[2..].iter().min().unwrap(),
                ops[2..].iter().max().unwrap(),
                messages[2..].iter().min().unwrap(),
                messages[2..].iter().max().unwrap(),
            );
        }
        }
        // A whole service going away and coming back: dispatch elements change, so the kernel
        // validates the table on commit.
        let last = full.services[n - 1].clone();
        let mut times = Vec::new();
        let mut ops = Vec::new();
        for k in 0..20 {
            let change = if k % 2 == 0 {
                Change::Remove {
                    namespace: last.namespace.clone(),
                    name: last.name.clone(),
                }
            } else {
                Change::Upsert(last.clone())
            };
            let r = syncer.update(&[change]).unwrap();
            assert!(r.incremental && !r.read_back, "{r:?}");
            times.push(r.elapsed);
            ops.push(r.operations);
        }
        println!(
            "update(), a ClusterIP service removed / added again, 20 changes: {}; operations {}–{}",
            percentiles(times),
            ops.iter().min().unwrap(),
            ops.iter().max().unwrap()
        );
        let t = Instant::now();
        let drift = syncer.check_drift(false).unwrap();
        println!("drift check (readback + diff): {:.3} s, {} operations", t.elapsed().as_secs_f64(), drift.operations);

        // The whole-model path, for comparison.
        let mut less = full.clone();
        less.services[n / 2].endpoints.pop();
        let (a, b) = (nfcompile::compile(&full).unwrap(), nfcompile::compile(&less).unwrap());
        syncer.sync(a.clone()).unwrap();
        let mut times = Vec::new();
        for k in 0..20 {
            let desired = if k % 2 == 0 { b.clone() } else { a.clone() };
            times.push(syncer.sync(desired).unwrap().elapsed);
        }
        println!("sync() of whole models (diff of everything), 20 changes: {}", percentiles(times));
    })
    .join()
    .unwrap();
}
