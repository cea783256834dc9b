//! A client (192.168.10.10) behind a router that is the node, with two pods on its bridge
//! running a line-echo server (TCP and UDP): the harness of the CLI's real-packet tests.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Netns, Process};

/// A line-echo server: every line a client sends is answered with `NAME saw CLIENT`; every
/// UDP datagram to the same port too.
pub const LINE_SERVER: &str = r#"
import socket, sys, threading
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", int(sys.argv[1])))
    while True:
        d, a = u.recvfrom(512)
        u.sendto((sys.argv[2] + " saw " + a[0] + "\n").encode(), a)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
def serve(c, a):
    f = c.makefile("rw")
    for line in f:
        f.write(sys.argv[2] + " saw " + a[0] + "\n")
        f.flush()
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c, a), daemon=True).start()
"#;

/// One line out, one line back.
pub const LINE_CLIENT: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    f = s.makefile("rw")
    f.write("hello\n"); f.flush()
    print(f.readline().strip())
except Exception as e:
    print("ERROR " + type(e).__name__)
"#;

pub fn line_connect(ns: &Netns, ip: &str, port: u16) -> String {
    let out = ns.exec(&["python3", "-c", LINE_CLIENT, ip, &port.to_string()]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn two_endpoint_cluster(
    endpoints: &[&str],
    affinity: bool,
    weights: &[u32],
    load_balancing: Option<&str>,
) -> String {
    let lb = load_balancing
        .map(|lb| format!("  loadBalancing: {lb}\n"))
        .unwrap_or_default();
    let options = [
        (affinity, "  sessionAffinityTimeout: 600\n"),
        (load_balancing.is_some(), lb.as_str()),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, line)| *line)
    .collect::<String>();
    let eps: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let w = weights.get(i).copied().unwrap_or(1);
            format!("  - {{address: {a}, nodeName: router, weight: {w}, ports: [{{name: tcp, port: 80}}, {{name: udp, protocol: UDP, port: 80}}]}}")
        })
        .collect();
    format!(
        "apiVersion: nfcompile.io/v1alpha1\nkind: Cluster\nnode: {{name: router, addresses: [192.168.20.1, 192.168.10.1]}}\n\
         config: {{clusterCIDRs: [192.168.20.0/24]}}\nservices:\n- namespace: default\n  name: web\n  clusterIPs: [10.96.0.100]\n  \
         loadBalancerIPs: [192.168.10.100]\n  ports: [{{name: tcp, port: 80}}, {{name: udp, protocol: UDP, port: 80}}]\n{}  endpoints:\n{}\n",
        options,
        eps.join("\n")
    )
}

/// A client (192.168.10.10) behind the router, which is the node: two pods on its bridge
/// (192.168.20.20 "pod-a" and .21 "pod-b") run the line-echo server; the service's load-balancer
/// IP 192.168.10.100 points at the router. `apply` programs the router with `nfcompile apply`
/// for a cluster of the given endpoints and returns its output.
pub struct TwoPods {
    /// The client, 192.168.10.10.
    pub client: Netns,
    /// The node and router, 192.168.10.1 / 192.168.20.1.
    pub router: Netns,
    /// pod-a and pod-b.
    pub pods: [Netns; 2],
    _servers: Vec<Process>,
    /// A scratch folder for inputs, deleted with the harness.
    pub dir: std::path::PathBuf,
    affinity: bool,
    /// The `nfcompile` binary (`env!("CARGO_BIN_EXE_nfcompile")` of the CLI's tests).
    nfcompile: &'static str,
}

pub const POD_ADDRS: [&str; 2] = ["192.168.20.20", "192.168.20.21"];

impl TwoPods {
    pub fn new(nfcompile: &'static str, affinity: bool) -> TwoPods {
        let client = Netns::new("client");
        let router = Netns::new("router");
        let pods = [Netns::new("poda"), Netns::new("podb")];
        router.sh(&format!(
            "ip link add r0 type veth peer name c0 netns {}",
            client.name
        ));
        router.sh("ip link add br0 type bridge && ip link set br0 up && ip addr add 192.168.20.1/24 dev br0",
        );
        for (i, pod) in pods.iter().enumerate() {
            router.sh(&format!("ip link add r{} type veth peer name p0 netns {} && ip link set r{} master br0 && ip link set r{} up", i + 1, pod.name, i + 1, i + 1));
            pod.sh(&format!("ip addr add {}/24 dev p0 && ip link set p0 up && ip link set lo up && ip route add default via 192.168.20.1", POD_ADDRS[i]));
        }
        router.sh("ip addr add 192.168.10.1/24 dev r0 && ip link set r0 up && ip link set lo up && sysctl -qw net.ipv4.ip_forward=1");
        client.sh("ip addr add 192.168.10.10/24 dev c0 && ip link set c0 up && ip link set lo up && ip route add default via 192.168.10.1");
        let mac =
            String::from_utf8(router.exec(&["cat", "/sys/class/net/r0/address"]).stdout).unwrap();
        client.sh(&format!(
            "ip neigh replace 192.168.10.100 lladdr {} dev c0 nud permanent",
            mac.trim()
        ));
        let dir = std::env::temp_dir().join(format!("nfc-{}-{}", router.name, std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let servers: Vec<Process> = pods
            .iter()
            .zip(["pod-a", "pod-b"])
            .map(|(pod, name)| {
                Process(
                    Command::new("ip")
                        .args([
                            "netns",
                            "exec",
                            &pod.name,
                            "timeout",
                            "120",
                            "python3",
                            "-c",
                            LINE_SERVER,
                            "80",
                            name,
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        let start = Instant::now();
        for (pod, addr) in pods.iter().zip(POD_ADDRS) {
            while !line_connect(pod, addr, 80).contains("saw") {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "echo server did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        TwoPods {
            client,
            router,
            pods,
            _servers: servers,
            nfcompile,
            dir,
            affinity,
        }
    }

    pub fn apply(&self, endpoints: &[&str]) -> String {
        self.apply_weighted(endpoints, &[])
    }

    /// `apply` with endpoint weights (missing ones are 1).
    pub fn apply_weighted(&self, endpoints: &[&str], weights: &[u32]) -> String {
        self.apply_with(endpoints, weights, None)
    }

    pub fn apply_with(&self, endpoints: &[&str], weights: &[u32], lb: Option<&str>) -> String {
        self.apply_yaml(
            &two_endpoint_cluster(endpoints, self.affinity, weights, lb),
            &[],
        )
    }

    /// `nfcompile apply` of this cluster text, with extra arguments.
    pub fn apply_yaml(&self, yaml: &str, extra: &[&str]) -> String {
        let file = self.dir.join("cluster.yaml");
        std::fs::write(&file, yaml).unwrap();
        let apply = [self.nfcompile, "apply", "-q", "-f"];
        self.router.ok(
            "apply",
            &[&apply[..], &[file.to_str().unwrap()], extra].concat(),
        )
    }
}

impl Drop for TwoPods {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
