//! IPv6 session affinity with real packets: an IPv6 client behind the node (`nfcompile apply`
//! over netlink), two IPv6 pods. With ClientIP affinity every new connection reaches the pod
//! the first one did; without it both pods answer; when the pinned endpoint leaves, the entry
//! pinning the client (a 40-byte key) is deleted and the client moves.
//!
//! ```text
//! client fd00:10::10 ── router fd00:10::1 | br0 fd00:20::1 ── pod-a fd00:20::20, pod-b fd00:20::21
//! ```

use nfcompile_test_support as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{packets_unavailable, skip, Netns, Process};

/// Answers every TCP connection with `NAME saw CLIENT` (IPv6).
const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(16)
while True:
    c, a = s.accept()
    c.sendall((sys.argv[2] + " saw " + a[0] + "\n").encode())
    c.close()
"#;

/// Makes `count` connections one after the other (each from a new source port, so each is a
/// new conntrack entry) and prints each answer on its own line.
const CLIENT: &str = r#"
import socket, sys
for _ in range(int(sys.argv[3])):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
        print(s.makefile().readline().strip(), flush=True)
        s.close()
    except Exception as e:
        print("ERROR " + type(e).__name__, flush=True)
"#;

const CLUSTER_IP: &str = "fd00:96::100";
const PODS: [(&str, &str); 2] = [("pod-a", "fd00:20::20"), ("pod-b", "fd00:20::21")];

struct Topology {
    client: Netns,
    router: Netns,
    _pods: Vec<Netns>,
    _servers: Vec<Process>,
    dir: std::path::PathBuf,
}

impl Topology {
    fn new() -> Topology {
        let client = Netns::new("client6");
        let router = Netns::new("router6");
        router.sh(&format!(
            "ip link add r0 type veth peer name c0 netns {} && \
             ip link add br0 type bridge && ip link set br0 up && \
             ip addr add fd00:20::1/64 dev br0 nodad && \
             ip addr add fd00:10::1/64 dev r0 nodad && ip link set r0 up && ip link set lo up && \
             sysctl -qw net.ipv6.conf.all.forwarding=1",
            client.name
        ));
        client.sh(
            "ip addr add fd00:10::10/64 dev c0 nodad && ip link set c0 up && ip link set lo up && \
             ip -6 route add default via fd00:10::1",
        );
        let mut pods = Vec::new();
        let mut servers = Vec::new();
        for (i, (name, addr)) in PODS.iter().enumerate() {
            let pod = Netns::new(name);
            router.sh(&format!(
                "ip link add r{n} type veth peer name p0 netns {} && ip link set r{n} master br0 && \
                 ip link set r{n} up",
                pod.name,
                n = i + 1
            ));
            pod.sh(&format!(
                "ip addr add {addr}/64 dev p0 nodad && ip link set p0 up && ip link set lo up && \
                 ip -6 route add default via fd00:20::1"
            ));
            servers.push(Process(
                Command::new("ip")
                    .args([
                        "netns", "exec", &pod.name, "timeout", "120", "python3", "-c",
                    ])
                    .args([SERVER, "80", name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            ));
            pods.push(pod);
        }
        let start = Instant::now();
        for (pod, (name, addr)) in pods.iter().zip(PODS) {
            while !connect(pod, addr, 1).iter().any(|l| l.starts_with(name)) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "the echo server of {name} did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let dir = std::env::temp_dir().join(format!("nfc-{}", router.name));
        std::fs::create_dir_all(&dir).unwrap();
        Topology {
            client,
            router,
            _pods: pods,
            _servers: servers,
            dir,
        }
    }

    /// `nfcompile apply` on the router of one service over `endpoints`; its output.
    fn apply(&self, endpoints: &[&str], affinity: bool) -> String {
        let eps: Vec<String> = endpoints
            .iter()
            .map(|a| {
                format!(
                    "  - {{address: \"{a}\", nodeName: router, ports: [{{name: tcp, port: 80}}]}}"
                )
            })
            .collect();
        let yaml = format!(
            "apiVersion: nfcompile.io/v1alpha1\nkind: Cluster\n\
             node: {{name: router, addresses: [\"fd00:20::1\", \"fd00:10::1\"]}}\n\
             config: {{clusterCIDRs: [\"fd00:20::/64\"]}}\nservices:\n\
             - namespace: default\n  name: web\n  clusterIPs: [\"{CLUSTER_IP}\"]\n{}  \
             ports: [{{name: tcp, port: 80}}]\n  endpoints:\n{}\n",
            if affinity {
                "  sessionAffinityTimeout: 600\n"
            } else {
                ""
            },
            eps.join("\n")
        );
        let file = self.dir.join("cluster.yaml");
        std::fs::write(&file, yaml).unwrap();
        let bin = env!("CARGO_BIN_EXE_nfcompile");
        self.router
            .ok("apply", &[bin, "apply", "-q", "-f", file.to_str().unwrap()])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connect(ns: &Netns, ip: &str, count: usize) -> Vec<String> {
    let out = ns.exec(&["python3", "-c", CLIENT, ip, "80", &count.to_string()]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The pods that answered, in order of the answers.
fn pods_of(answers: &[String]) -> Vec<&'static str> {
    answers
        .iter()
        .map(|a| {
            PODS.iter()
                .map(|(n, _)| *n)
                .find(|n| a.starts_with(n))
                .unwrap_or_else(|| panic!("an answer from no pod: {a:?} (all: {answers:?})"))
        })
        .collect()
}

#[test]
fn ipv6_session_affinity_pins_clients_and_moves_them_off_a_removed_endpoint() {
    if let Some(reason) = packets_unavailable() {
        return skip(
            "ipv6_session_affinity_pins_clients_and_moves_them_off_a_removed_endpoint",
            &reason,
        );
    }
    let t = Topology::new();
    let addrs: Vec<&str> = PODS.iter().map(|(_, a)| *a).collect();

    // Without affinity both pods answer (30 connections: both are missed with p = 2^-29).
    t.apply(&addrs, false);
    let answers = connect(&t.client, CLUSTER_IP, 30);
    let mut seen = pods_of(&answers);
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["pod-a", "pod-b"], "without affinity: {answers:?}");

    // With affinity: 12 connections, all to the pod the first one reached.
    t.apply(&addrs, true);
    let answers = connect(&t.client, CLUSTER_IP, 12);
    let pinned = pods_of(&answers);
    assert_eq!(pinned.len(), 12, "{answers:?}");
    assert!(
        pinned.iter().all(|p| *p == pinned[0]),
        "IPv6 affinity did not hold: {answers:?}"
    );

    // Remove the pinned endpoint (its pod keeps answering): the pinning entry goes and new
    // connections reach the other pod.
    let other = PODS.iter().find(|(n, _)| *n != pinned[0]).unwrap();
    let out = t.apply(&[other.1], true);
    assert!(
        out.contains("session affinity: 1 entries of removed endpoints deleted"),
        "{out}"
    );
    let answers = connect(&t.client, CLUSTER_IP, 6);
    assert!(
        pods_of(&answers).iter().all(|p| *p == other.0),
        "after removing {}: {answers:?}",
        pinned[0]
    );
}
