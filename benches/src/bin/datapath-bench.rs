//! Datapath cost of a ruleset: new TCP connections per second through DNAT, for clusters of
//! different sizes, with nfcompile's rules (applied over netlink) and with kube-proxy's
//! iptables-mode rules (`iptables-legacy-restore`). Needs root.
//!
//! ```text
//!  client 10.1.0.2 ── node (rules) ── server 10.2.0.2 (answers for all of 10.128.0.0/9)
//! ```
//!
//! The client connects to the cluster IP of the **last** service (the worst case for a linear
//! chain of services), reads one byte and resets, in a loop for a fixed time (median of three
//! runs); that service is a plain ClusterIP service with 5 endpoints in every size.
//!
//! Usage: datapath-bench [--counters] [SECONDS] [SIZES…]   (default 3 s; 1 10000 50000)
//! `--counters` also measures nfcompile's rules with per-service counters on (every packet
//! then passes the counting chain; the connection is counted before dispatch).
//! Internal: datapath-bench serve PORT | datapath-bench connect IP PORT SECONDS

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nfcompile::ir::{Cluster, TrafficPolicy};

fn sh(ns: &str, cmd: &str) {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .status()
        .expect("run ip")
        .success();
    assert!(ok, "{cmd} in {ns} failed");
}

fn serve(port: u16) {
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for mut c in l.incoming().flatten() {
        let _ = std::io::Write::write_all(&mut c, b"x");
    }
}

/// Connect, read the byte, close with a reset (no TIME_WAIT pile-up on either side).
fn connect(addr: SocketAddr, secs: f64) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut ok, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    while Instant::now() < end {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(mut s) => {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    ok += 1;
                } else {
                    failed += 1;
                }
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: a valid socket and a correctly sized option value.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
            }
            Err(_) => failed += 1,
        }
    }
    println!("{ok} {failed} {:.3}", start.elapsed().as_secs_f64());
}

/// The benchmark's cluster with its last service made a plain ClusterIP service.
fn cluster(services: usize) -> Cluster {
    let mut c = nfcompile::synth::cluster(nfcompile::synth::Shape {
        services,
        endpoints: 5,
        nodes: 10,
    });
    let last = c.services.last_mut().expect("at least one service");
    last.session_affinity_timeout = None;
    last.load_balancer_ips.clear();
    last.external_traffic_policy = TrafficPolicy::Cluster;
    for p in &mut last.ports {
        p.node_port = None;
    }
    c
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Child_(Child);

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// New connections per second through `rules` ("nfcompile", "nfcompile-counters" or
/// "iptables") for `services`.
fn measure(rules: &str, services: usize, secs: f64, dir: &std::path::Path) -> f64 {
    let me = std::env::current_exe().unwrap();
    let tag = format!("{}-{}", std::process::id(), services);
    let [client, node, server] =
        ["c", "n", "s"].map(|r| Netns(format!("nfc-dp-{r}-{rules}-{tag}")));
    for ns in [&client, &node, &server] {
        assert!(Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success());
    }
    sh(&node.0, &format!(
        "ip link add c0 type veth peer name eth0 netns {} && ip link add s0 type veth peer name eth0 netns {} \
         && ip addr add 10.1.0.1/24 dev c0 && ip addr add 10.2.0.1/24 dev s0 && ip link set c0 up && ip link set s0 up && ip link set lo up \
         && ip route add 10.128.0.0/9 via 10.2.0.2 && sysctl -qw net.ipv4.ip_forward=1",
        client.0, server.0));
    sh(&client.0, "ip addr add 10.1.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 10.1.0.1 \
         && sysctl -qw net.ipv4.ip_local_port_range='10000 65000'");
    sh(&server.0, "ip addr add 10.2.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 10.2.0.1 \
         && ip route add local 10.128.0.0/9 dev lo");
    let mut c = cluster(services);
    c.config.counters = rules == "nfcompile-counters";
    match rules {
        "nfcompile" | "nfcompile-counters" => {
            let ruleset = nfcompile::compile(&c).expect("valid");
            let ns = std::fs::File::open(format!("/run/netns/{}", node.0)).unwrap();
            // Apply from a thread inside the node's namespace: no process start-up.
            std::thread::scope(|s| {
                s.spawn(|| {
                    // SAFETY: setns on this thread only, with a namespace file descriptor.
                    assert_eq!(
                        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                        0
                    );
                    nfcompile_netlink::apply(&ruleset).expect("apply");
                });
            });
        }
        _ => {
            let file = dir.join(format!("{services}.iptables"));
            std::fs::write(
                &file,
                nfcompile_benches::peers::kube_iptables::restore_input(&c),
            )
            .unwrap();
            sh(
                &node.0,
                &format!("iptables-legacy-restore < {}", file.display()),
            );
        }
    }
    let _server = Child_(
        Command::new("ip")
            .args(["netns", "exec", &server.0])
            .arg(&me)
            .args(["serve", "8080"])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let vip = c.services.last().unwrap().cluster_ips[0].to_string();
    let run = |secs: f64| {
        let out = Command::new("ip")
            .args(["netns", "exec", &client.0])
            .arg(&me)
            .args(["connect", &vip, "80", &secs.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(
            v.len() == 3 && v[0] > 0.0,
            "no connection got through: {text}"
        );
        assert!(v[1] == 0.0, "{} connections failed", v[1]);
        v[0] / v[2]
    };
    run(0.5); // warm up (ARP, caches)
              // The median of three runs: a 2-core machine's neighbours move single runs by ±15%.
    let mut rates = [run(secs), run(secs), run(secs)];
    rates.sort_by(f64::total_cmp);
    rates[1]
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let counters = args.first().is_some_and(|a| a == "--counters");
    if counters {
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        Some("serve") => return serve(args[1].parse().unwrap()),
        Some("connect") => {
            return connect(
                SocketAddr::new(args[1].parse().unwrap(), args[2].parse().unwrap()),
                args[3].parse().unwrap(),
            )
        }
        _ => {}
    }
    let secs: f64 = args.first().map(|s| s.parse().unwrap()).unwrap_or(3.0);
    let sizes: Vec<usize> = if args.len() > 1 {
        args[1..].iter().map(|s| s.parse().unwrap()).collect()
    } else {
        vec![1, 10_000, 50_000]
    };
    let dir = std::env::temp_dir().join(format!("nfc-datapath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with_counters = if counters {
        " nfcompile + counters conn/s | vs 1 service, no counters |"
    } else {
        ""
    };
    println!("| services | nfcompile conn/s | vs 1 service |{with_counters} iptables (kube-proxy) conn/s | vs 1 service |");
    println!(
        "|---:|---:|---:|{}---:|---:|",
        if counters { "---:|---:|" } else { "" }
    );
    let (mut base_n, mut base_i) = (None, None);
    for n in sizes {
        let a = measure("nfcompile", n, secs, &dir);
        let bn = *base_n.get_or_insert(a);
        let counted = if counters {
            let k = measure("nfcompile-counters", n, secs, &dir);
            format!(" {k:.0} | {:.0}% |", 100.0 * k / bn)
        } else {
            String::new()
        };
        let b = measure("iptables", n, secs, &dir);
        let bi = *base_i.get_or_insert(b);
        println!(
            "| {n} | {a:.0} | {:.0}% |{counted} {b:.0} | {:.0}% |",
            100.0 * a / bn,
            100.0 * b / bi
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
