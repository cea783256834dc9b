//! Real packets through the compiled rules: the VIP workshop (shared/seeds) in three network
//! namespaces — a client on the public side, the router that is node + load balancer, and pod B.
//! The router is programmed twice over, in separate runs: with the golden script through the
//! real `nft -f`, and with `nfcompile apply` over netlink.

#[path = "../../nfcompile/tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{kernel_unavailable, skip, Netns};

const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    c, a = s.accept()
    c.recv(1024)
    c.sendall(("HTTP/1.0 200 OK\r\n\r\n" + sys.argv[2] + " saw " + a[0] + "\n").encode())
    c.close()
"#;

const CLIENT: &str = r#"
import socket, sys, time
t = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    print(s.recv(1024).decode().split("\r\n\r\n", 1)[1].strip())
except ConnectionRefusedError:
    print("REFUSED after %.3f s" % (time.monotonic() - t))
except socket.timeout:
    print("TIMEOUT")
"#;

/// A server process inside a namespace, killed when dropped; bounded by `timeout` anyway.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(ns: &Netns, cmd: &str) {
    let out = ns.exec(&["sh", "-c", cmd]);
    assert!(
        out.status.success(),
        "{} in {}: {}",
        cmd,
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn connect(ns: &Netns, ip: &str, port: u16) -> String {
    let out = ns.exec(&["python3", "-c", CLIENT, ip, &port.to_string()]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

enum Loader {
    NftScript,
    NetlinkApply,
}

#[test]
fn vip_workshop_with_real_packets_nft_f() {
    vip_workshop(Loader::NftScript);
}

#[test]
fn vip_workshop_with_real_packets_nfcompile_apply() {
    vip_workshop(Loader::NetlinkApply);
}

fn vip_workshop(loader: Loader) {
    if let Some(reason) = kernel_unavailable() {
        return skip("vip_workshop_with_real_packets", &reason);
    }
    if Command::new("python3").arg("-V").output().is_err() {
        return skip(
            "vip_workshop_with_real_packets",
            "python3 (the echo server) is missing",
        );
    }
    let client = Netns::new("client");
    let router = Netns::new("router");
    let pod = Netns::new("podb");
    // Links are created inside the namespaces, so no name can clash with the host's.
    sh(
        &router,
        &format!(
            "ip link add r0 type veth peer name c0 netns {}",
            client.name
        ),
    );
    sh(
        &router,
        &format!("ip link add r1 type veth peer name p0 netns {}", pod.name),
    );
    sh(&router, "ip addr add 192.168.10.1/24 dev r0 && ip addr add 192.168.20.1/24 dev r1 && ip link set r0 up && ip link set r1 up && ip link set lo up && sysctl -qw net.ipv4.ip_forward=1");
    sh(&client, "ip addr add 192.168.10.10/24 dev c0 && ip link set c0 up && ip link set lo up && ip route add default via 192.168.10.1");
    sh(&pod, "ip addr add 192.168.20.20/24 dev p0 && ip link set p0 up && ip link set lo up && ip route add default via 192.168.20.1");
    // MetalLB L2 style: the client's neighbour entry sends the VIP to the router's MAC; the
    // router does not own the address, so only the prerouting rules can catch it.
    let mac = String::from_utf8(router.exec(&["cat", "/sys/class/net/r0/address"]).stdout).unwrap();
    sh(
        &client,
        &format!(
            "ip neigh replace 192.168.10.100 lladdr {} dev c0 nud permanent",
            mac.trim()
        ),
    );
    sh(&client, "ip route add 192.168.10.100/32 dev c0");

    match loader {
        Loader::NftScript => router
            .nft_load(&common::golden_dir("nft").join("vip-workshop.nft"))
            .expect("the golden script loads"),
        Loader::NetlinkApply => {
            let input = common::scenarios()
                .into_iter()
                .find(|(n, _)| n == "vip-workshop")
                .unwrap()
                .1;
            let out = router.exec(&[
                env!("CARGO_BIN_EXE_nfcompile"),
                "apply",
                "-f",
                input.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "apply: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("applied: "));
        }
    }

    // The workshop's Step 2: public clients may not reach the pod network directly. A table of
    // its own, beside nfcompile's (which must leave it alone): only DNATed flows pass.
    sh(
        &router,
        "nft add table ip workshop && nft 'add chain ip workshop forward { type filter hook forward priority 0; }' && nft add rule ip workshop forward ct status dnat accept && nft add rule ip workshop forward iifname r0 oifname r1 drop",
    );

    let _server = Server(
        Command::new("ip")
            .args([
                "netns", "exec", &pod.name, "timeout", "120", "python3", "-c", SERVER, "80",
                "pod-b",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait for the server to listen (from inside its namespace).
    let start = Instant::now();
    while !connect(&pod, "127.0.0.1", 80).contains("pod-b") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "echo server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Directly: blocked by the workshop's firewall (the SYN is dropped, so it times out).
    assert_eq!(connect(&client, "192.168.20.20", 80), "TIMEOUT");
    // Through the VIP: DNAT to pod B, masqueraded to the router's pod-side address.
    for _ in 0..5 {
        assert_eq!(
            connect(&client, "192.168.10.100", 80),
            "pod-b saw 192.168.20.1"
        );
    }
    // The node port answers on the node's primary (InternalIP) address only, kube-proxy's
    // default nodePortAddresses; on the ExternalIP nothing listens and the node refuses.
    assert_eq!(
        connect(&client, "192.168.20.1", 30080),
        "pod-b saw 192.168.20.1"
    );
    let not_a_node_port = connect(&client, "192.168.10.1", 30080);
    assert!(not_a_node_port.starts_with("REFUSED"), "{not_a_node_port}");
    // A pod calling the cluster IP keeps its own address (no masquerade from inside the cluster);
    // pod B reaching itself through the service is hairpin traffic and is masqueraded.
    sh(&pod, "ip route add 10.96.0.0/16 via 192.168.20.1 || true");
    assert_eq!(connect(&pod, "10.96.0.100", 80), "pod-b saw 192.168.20.1");
    // A port that is not a service port of the cluster IP is refused at once, not timed out.
    sh(&client, "ip route add 10.96.0.0/16 via 192.168.10.1");
    let refused = connect(&client, "10.96.0.100", 81);
    assert!(refused.starts_with("REFUSED"), "{refused}");
    // The service port of the cluster IP, from outside the cluster: masqueraded.
    assert_eq!(
        connect(&client, "10.96.0.100", 80),
        "pod-b saw 192.168.20.1"
    );
}
