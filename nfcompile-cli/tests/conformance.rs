//! The conformance matrix with real packets: two nodes programmed by `nfcompile apply --node`,
//! each with its own view of the cluster, routed pods running a TCP and UDP echo server that
//! answers with its name and the client address it saw, an external client on the LAN. Every
//! case of `common::conformance` runs for TCP and UDP; the tracer runs the same cases in
//! nfcompile/tests/conformance.rs.
//!
//! ```text
//!            ext 192.168.50.100
//!                   |
//!       lan: bridge 192.168.50.0/24
//!          /                    \
//!   n1 192.168.50.1         n2 192.168.50.2
//!   /    |     \             /    |     \          one veth per pod, node end 10.244.N.1/32,
//!  a1   a2    c1           b1    b2     c2         pod end its /32 (routed, no pod bridge)
//! ```

use nfcompile_test_support as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::conformance::{self as matrix, Expect, From, Outcome, Reached, Src, CASES, NODES};
use common::{packets_unavailable, skip, Netns, Process};

/// Answers every TCP connection and UDP datagram on the port with `NAME saw CLIENT`.
const ECHO: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
def tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, a = s.accept()
        try:
            c.sendall((name + " saw " + a[0] + "\n").encode())
        finally:
            c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", port))
while True:
    d, a = u.recvfrom(512)
    u.sendto((name + " saw " + a[0] + "\n").encode(), a)
"#;

/// Makes up to `tries` new connections (new source port each, so each is a new conntrack
/// entry and a new load-balancing decision), stopping early once every name in `want` answered
/// and at least `min` tries were made, or at the first refusal or silence. One line each.
const PROBE: &str = r#"
import socket, sys, time
proto, ip, port, tries, least = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
want = set(filter(None, sys.argv[6].split(",")))
seen = set()
for i in range(tries):
    t = time.monotonic()
    try:
        if proto == "tcp":
            s = socket.create_connection((ip, port), timeout=1.0)
            line = s.makefile().readline().strip()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1.0)
            s.connect((ip, port))
            s.send(b"hello")
            line = s.recv(512).decode().strip()
        s.close()
    except ConnectionRefusedError:
        print("REFUSED %.3f" % (time.monotonic() - t)); break
    except PermissionError:
        print("DROPPED-LOCALLY"); break
    except (socket.timeout, TimeoutError):
        print("TIMEOUT"); break
    except OSError as e:
        print("ERROR " + str(e)); break
    print(line, flush=True)
    seen.add(line.split(" ")[0])
    if i + 1 >= least and want and want <= seen:
        break
"#;

struct Topology {
    _lan: Netns,
    ext: Netns,
    nodes: Vec<Netns>,
    pods: Vec<Netns>,
    _servers: Vec<Process>,
}

impl Topology {
    fn new() -> Topology {
        let lan = Netns::new("lan");
        let ext = Netns::new("ext");
        let nodes: Vec<Netns> = NODES.iter().map(|n| Netns::new(n.name)).collect();
        let pods: Vec<Netns> = matrix::PODS.iter().map(|p| Netns::new(p.name)).collect();
        lan.sh("ip link add br0 type bridge && ip link set br0 up && ip link set lo up");
        let lan_hosts = std::iter::once((&ext, matrix::EXTERNAL))
            .chain(nodes.iter().zip(NODES.iter().map(|n| n.addr)));
        for (i, (ns, addr)) in lan_hosts.enumerate() {
            lan.sh(&format!(
                    "ip link add l{i} type veth peer name eth0 netns {} && ip link set l{i} master br0 && ip link set l{i} up",
                    ns.name
                ),
            );
            ns.sh(&format!(
                "ip addr add {addr}/{} dev eth0 && ip link set eth0 up && ip link set lo up",
                matrix::LAN_PREFIX
            ));
        }
        for prefix in matrix::VIA_N1 {
            ext.sh(&format!("ip route add {prefix} via {}", NODES[0].addr));
        }
        // A node forwarding the external client's packet to the other node over the LAN would
        // send it an ICMP redirect (the client would then bypass n1), and redirects spend the
        // per-destination ICMP budget that rejections need: no redirects, no rate limit.
        ext.sh(
            "sysctl -qw net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.eth0.accept_redirects=0",
        );
        for (i, ns) in nodes.iter().enumerate() {
            let other = &NODES[1 - i];
            ns.sh(&format!(
                    "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                     net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0 net.ipv4.icmp_ratelimit=0 \
                     && ip route add {} via {} && ip route add default via {}",
                    other.pod_cidr,
                    other.addr,
                    matrix::EXTERNAL
                ),
            );
        }
        // Routed pods: a point-to-point veth each, the node's end holding the pod gateway.
        for (p, ns) in matrix::PODS.iter().zip(&pods) {
            let node = &nodes[p.node];
            let gw = NODES[p.node].gateway;
            node.sh(&format!(
                    "ip link add v-{n} type veth peer name eth0 netns {pod} && ip addr add {gw}/32 dev v-{n} \
                     && ip link set v-{n} up && ip route add {a}/32 dev v-{n}",
                    n = p.name,
                    pod = ns.name,
                    a = p.addr
                ),
            );
            ns.sh(&format!(
                "ip addr add {}/32 dev eth0 && ip link set eth0 up && ip link set lo up \
                     && ip route add {gw} dev eth0 && ip route add default via {gw} dev eth0",
                p.addr
            ));
        }
        let servers: Vec<Process> = matrix::PODS
            .iter()
            .zip(&pods)
            .filter(|(p, _)| p.serves)
            .map(|(p, ns)| {
                Process(
                    Command::new("ip")
                        .args(["netns", "exec", &ns.name, "timeout", "600", "python3", "-c"])
                        .args([ECHO, p.name, &matrix::TARGET_PORT.to_string()])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        let topo = Topology {
            _lan: lan,
            ext,
            nodes,
            pods,
            _servers: servers,
        };
        let start = Instant::now();
        for (p, ns) in matrix::PODS.iter().zip(&topo.pods) {
            if !p.serves {
                continue;
            }
            for proto in ["tcp", "udp"] {
                while !probe(ns, proto, "127.0.0.1", matrix::TARGET_PORT, 1, 1, "")
                    .starts_with(p.name)
                {
                    assert!(
                        start.elapsed() < Duration::from_secs(15),
                        "the echo server of {} did not start",
                        p.name
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        topo
    }

    fn namespace(&self, from: From) -> &Netns {
        match from {
            From::Pod(name) => {
                let i = matrix::PODS.iter().position(|p| p.name == name).unwrap();
                &self.pods[i]
            }
            From::Node(n) => &self.nodes[n],
            From::External => &self.ext,
        }
    }
}

fn probe(
    ns: &Netns,
    proto: &str,
    ip: &str,
    port: u16,
    tries: u32,
    least: u32,
    want: &str,
) -> String {
    let out = ns.exec(&[
        "python3",
        "-c",
        PROBE,
        proto,
        ip,
        &port.to_string(),
        &tries.to_string(),
        &least.to_string(),
        want,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the probe's lines say, in the matrix's terms. From a node itself the source cannot
/// tell masquerade apart (the node's own address is a node address either way), so any node
/// address counts as masquerade there.
fn observe(from: From, lines: &str) -> (Outcome, bool) {
    let mut reached: Vec<Reached> = Vec::new();
    let mut first: Option<Reached> = None;
    let mut sticky = true;
    for line in lines.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let outcome = match words.as_slice() {
            [name, "saw", addr] => {
                let src = if matches!(from, From::Node(_)) && matrix::is_node_address(addr) {
                    Src::Masq
                } else if *addr == from.address() {
                    Src::Kept
                } else if matrix::is_node_address(addr) {
                    Src::Masq
                } else {
                    return (Outcome::Other(format!("{name} saw {addr}")), false);
                };
                let r = Reached {
                    pod: name.to_string(),
                    src,
                };
                match &first {
                    None => first = Some(r.clone()),
                    Some(f) => sticky &= *f == r,
                }
                reached.push(r);
                continue;
            }
            ["REFUSED", secs] if secs.parse::<f64>().is_ok_and(|s| s < 0.5) => Outcome::Reject,
            ["TIMEOUT"] | ["DROPPED-LOCALLY"] => Outcome::Drop,
            _ => Outcome::Other(line.to_string()),
        };
        // A refusal or silence after some answers is an outcome of its own.
        if !reached.is_empty() {
            return (Outcome::Other(format!("{reached:?}, then {line}")), false);
        }
        return (outcome, false);
    }
    if reached.is_empty() {
        return (Outcome::Other("no answer at all".into()), false);
    }
    reached.sort();
    reached.dedup();
    (Outcome::Reached(reached), sticky)
}

#[test]
fn every_case_of_the_matrix_with_real_packets() {
    if let Some(reason) = packets_unavailable() {
        return skip("every_case_of_the_matrix_with_real_packets", &reason);
    }
    let topo = Topology::new();
    let file = matrix::cluster_file();
    for (ns, node) in topo.nodes.iter().zip(&NODES) {
        let out = ns.exec(&[
            env!("CARGO_BIN_EXE_nfcompile"),
            "apply",
            "-q",
            "-f",
            file.to_str().unwrap(),
            "--node",
            node.name,
        ]);
        assert!(
            out.status.success(),
            "apply on {}: {}",
            node.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut failures = Vec::new();
    let mut ran = 0;
    for case in CASES {
        for proto in ["tcp", "udp"] {
            let (tries, least, want) = match case.expect {
                Expect::Reach(pods) => (
                    40,
                    8,
                    pods.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(","),
                ),
                Expect::Sticky(..) => (8, 8, String::new()),
                Expect::Reject | Expect::Drop => (1, 1, String::new()),
            };
            let lines = probe(
                topo.namespace(case.from),
                proto,
                case.dst,
                case.port,
                tries,
                least,
                &want,
            );
            let (outcome, sticky) = observe(case.from, &lines);
            ran += 1;
            let sticky_ok = !matches!(case.expect, Expect::Sticky(..)) || sticky;
            if !sticky_ok || !matrix::conforms(case.expect, &outcome, true) {
                failures.push(format!(
                    "{} ({proto} {:?} → {}:{}): expected {:?}, got {outcome:?}{}\n    {}",
                    case.what,
                    case.from,
                    case.dst,
                    case.port,
                    case.expect,
                    if sticky_ok { "" } else { " (not sticky)" },
                    lines.replace('\n', " | ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, 2 * CASES.len());
}
