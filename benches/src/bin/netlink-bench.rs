//! Cold apply over netlink vs `nft -f` of the same ruleset, and readback, per cluster size,
//! each in a fresh network namespace. Needs root. Usage: netlink-bench [--features] [SERVICES…]
//! (default 1000 5000 50000; 5 endpoints per service over 10 nodes). Prints a Markdown table.
//! `--features` turns on the opt-in load balancing of issue 7 for part of the services: every
//! 10th gets endpoint weights 1,2,3,1,2, every 25th round robin, every 100th Maglev (251
//! entries per frontend), and per-service-port counters for all.
use std::process::Command;
use std::time::{Duration, Instant};

fn thread_sys() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    Duration::from_secs(ru.ru_stime.tv_sec as u64)
        + Duration::from_micros(ru.ru_stime.tv_usec as u64)
}

fn children_sys() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    Duration::from_secs(ru.ru_stime.tv_sec as u64)
        + Duration::from_micros(ru.ru_stime.tv_usec as u64)
}

/// Run `f` on a thread of its own in a new, empty network namespace.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare needs root"
        );
        f()
    })
    .join()
    .unwrap()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Fail early, with the reason, rather than panicking halfway through the first size.
fn preflight() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netlink-bench: needs root (it unshares network namespaces and loads rulesets)");
        std::process::exit(1);
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!(
            "netlink-bench: `nft` not found on PATH: install nftables (apt-get install nftables)"
        );
        std::process::exit(1);
    }
}

fn main() {
    preflight();
    let features = std::env::args().any(|a| a == "--features");
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .filter(|a| a != "--features")
            .map(|a| {
                a.parse().unwrap_or_else(|_| {
                    eprintln!("netlink-bench: `{a}` is not a number of services");
                    std::process::exit(1)
                })
            })
            .collect();
        if args.is_empty() {
            vec![1000, 5000, 50000]
        } else {
            args
        }
    };
    println!("| services × 5 | elements | netlink apply (wall) | kernel (sys) | wall / kernel | nft -f (wall) | nft -f sys | nft -f / apply | readback (kernel) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let shape = nfcompile::synth::Shape {
            services: n,
            endpoints: 5,
            nodes: 10,
        };
        let mut cluster = nfcompile::synth::cluster(shape);
        if features {
            use nfcompile::ir::LoadBalancing;
            cluster.config.counters = true;
            for (i, s) in cluster.services.iter_mut().enumerate() {
                if i % 10 == 3 {
                    for (j, e) in s.endpoints.iter_mut().enumerate() {
                        e.weight = [1, 2, 3, 1, 2][j % 5];
                    }
                }
                if i % 25 == 7 {
                    s.load_balancing = LoadBalancing::RoundRobin;
                }
                if i % 100 == 11 {
                    s.load_balancing = LoadBalancing::Maglev;
                }
            }
        }
        let ruleset = nfcompile::compile(&cluster).unwrap();
        let text = nfcompile::emit::text::write_string(&ruleset);
        let rs = ruleset.clone();
        let (summary, wall, sys, rb) = in_fresh_netns(move || {
            let (s0, t0) = (thread_sys(), Instant::now());
            let summary = nfcompile_netlink::apply(&rs).expect("apply");
            let (wall, sys) = (t0.elapsed(), thread_sys() - s0);
            let (s1, t1) = (thread_sys(), Instant::now());
            let back = nfcompile_netlink::readback().expect("readback");
            let rb = t1.elapsed();
            let rb_sys = thread_sys() - s1;
            assert_eq!(back.tables.len(), rs.tables.len());
            (summary, wall, sys, (rb, rb_sys))
        });
        let (nft_wall, nft_sys) = in_fresh_netns(move || {
            let file =
                std::env::temp_dir().join(format!("netlink-bench-{}-{n}.nft", std::process::id()));
            std::fs::write(&file, text).unwrap();
            let (s0, t0) = (children_sys(), Instant::now());
            let ok = Command::new("nft")
                .arg("-f")
                .arg(&file)
                .status()
                .expect("nft")
                .success();
            let r = (t0.elapsed(), children_sys() - s0);
            std::fs::remove_file(&file).unwrap();
            assert!(ok, "nft -f failed");
            r
        });
        println!(
            "| {n} | {} | {} | {} | {:.2}× | {} | {} | {:.2}× | {} ({}) |",
            summary.elements,
            secs(wall),
            secs(sys),
            wall.as_secs_f64() / sys.as_secs_f64(),
            secs(nft_wall),
            secs(nft_sys),
            nft_wall.as_secs_f64() / wall.as_secs_f64(),
            secs(rb.0),
            secs(rb.1)
        );
    }
}
