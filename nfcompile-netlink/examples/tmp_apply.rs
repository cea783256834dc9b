fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(5000);
    let c = nfcompile::synth::cluster(nfcompile::synth::Shape {
        services: n,
        endpoints: 5,
        nodes: 10,
    });
    let r = nfcompile::compile(&c).unwrap();
    for _ in 0..6 {
        let r = r.clone();
        std::thread::spawn(move || {
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let sys = || {
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
                ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 / 1e6
            };
            let s0 = sys();
            let t = std::time::Instant::now();
            let s = nfcompile_netlink::apply(&r).unwrap();
            println!(
                "wall {:.1} ms sys {:.1} ms {} elements",
                t.elapsed().as_secs_f64() * 1e3,
                (sys() - s0) * 1e3,
                s.elements
            );
        })
        .join()
        .unwrap();
    }
}
