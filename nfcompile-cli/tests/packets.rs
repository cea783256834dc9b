//! Real packets through the compiled rules: the VIP workshop (shared/seeds) in three network
//! namespaces — a client on the public side, the router that is node + load balancer, and pod B.
//! The router is programmed twice over, in separate runs: with the golden script through the
//! real `nft -f`, and with `nfcompile apply` over netlink.

use nfcompile_test_support as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::two_pods::{line_connect, two_endpoint_cluster, TwoPods, POD_ADDRS};
use common::{packets_unavailable, skip, Netns, Process};

const NFCOMPILE: &str = env!("CARGO_BIN_EXE_nfcompile");

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
    if let Some(reason) = packets_unavailable() {
        return skip("vip_workshop_with_real_packets", &reason);
    }
    let client = Netns::new("client");
    let router = Netns::new("router");
    let pod = Netns::new("podb");
    // Links are created inside the namespaces, so no name can clash with the host's.
    router.sh(&format!(
        "ip link add r0 type veth peer name c0 netns {}",
        client.name
    ));
    router.sh(&format!(
        "ip link add r1 type veth peer name p0 netns {}",
        pod.name
    ));
    router.sh("ip addr add 192.168.10.1/24 dev r0 && ip addr add 192.168.20.1/24 dev r1 && ip link set r0 up && ip link set r1 up && ip link set lo up && sysctl -qw net.ipv4.ip_forward=1");
    client.sh("ip addr add 192.168.10.10/24 dev c0 && ip link set c0 up && ip link set lo up && ip route add default via 192.168.10.1");
    pod.sh("ip addr add 192.168.20.20/24 dev p0 && ip link set p0 up && ip link set lo up && ip route add default via 192.168.20.1");
    // MetalLB L2 style: the client's neighbour entry sends the VIP to the router's MAC; the
    // router does not own the address, so only the prerouting rules can catch it.
    let mac = String::from_utf8(router.exec(&["cat", "/sys/class/net/r0/address"]).stdout).unwrap();
    client.sh(&format!(
        "ip neigh replace 192.168.10.100 lladdr {} dev c0 nud permanent",
        mac.trim()
    ));
    client.sh("ip route add 192.168.10.100/32 dev c0");

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
    router.sh("nft add table ip workshop && nft 'add chain ip workshop forward { type filter hook forward priority 0; }' && nft add rule ip workshop forward ct status dnat accept && nft add rule ip workshop forward iifname r0 oifname r1 drop",
    );

    let _server = Process(
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
    pod.sh("ip route add 10.96.0.0/16 via 192.168.20.1 || true");
    assert_eq!(connect(&pod, "10.96.0.100", 80), "pod-b saw 192.168.20.1");
    // A port that is not a service port of the cluster IP is refused at once, not timed out.
    client.sh("ip route add 10.96.0.0/16 via 192.168.10.1");
    let refused = connect(&client, "10.96.0.100", 81);
    assert!(refused.starts_with("REFUSED"), "{refused}");
    // The service port of the cluster IP, from outside the cluster: masqueraded.
    assert_eq!(
        connect(&client, "10.96.0.100", 80),
        "pod-b saw 192.168.20.1"
    );
}

/// Holds one connection open: answers a line, waits for a line on stdin, answers again.
const HOLDING_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = s.makefile("rw")
f.write("first\n"); f.flush()
print(f.readline().strip(), flush=True)
sys.stdin.readline()
f.write("second\n"); f.flush()
print(f.readline().strip(), flush=True)
"#;

#[test]
fn an_established_connection_survives_removing_another_endpoint() {
    use std::io::{BufRead, BufReader, Write};
    if let Some(reason) = packets_unavailable() {
        return skip(
            "an_established_connection_survives_removing_another_endpoint",
            &reason,
        );
    }
    let t = TwoPods::new(NFCOMPILE, false);
    let (client, addrs) = (&t.client, POD_ADDRS);
    t.apply(&addrs);

    let mut holder = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client.name,
            "python3",
            "-c",
            HOLDING_CLIENT,
            "192.168.10.100",
            "80",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let (kept, removed) = if first.starts_with("pod-a") {
        (0, 1)
    } else {
        (1, 0)
    };
    assert!(first.starts_with(["pod-a", "pod-b"][kept]), "{first}");

    // Remove the endpoint this connection does not use; the change is incremental.
    let line = t.apply(&[addrs[kept]]);
    assert!(line.contains(" operations,"), "{line}");
    holder.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let second = lines.next().unwrap().unwrap();
    assert_eq!(second, first, "the established connection moved or broke");
    holder.wait().unwrap();
    for _ in 0..10 {
        let answer = line_connect(client, "192.168.10.100", 80);
        assert!(
            answer.starts_with(["pod-a", "pod-b"][kept]),
            "a new connection reached {answer}, not pod {}",
            ["a", "b"][kept]
        );
        assert!(!answer.starts_with(["pod-a", "pod-b"][removed]));
    }
}

#[test]
fn session_affinity_moves_off_a_removed_endpoint() {
    if let Some(reason) = packets_unavailable() {
        return skip("session_affinity_moves_off_a_removed_endpoint", &reason);
    }
    let t = TwoPods::new(NFCOMPILE, true);
    t.apply(&POD_ADDRS);
    // Affinity pins the client: every new connection reaches the pod the first one did.
    let first = line_connect(&t.client, "192.168.10.100", 80);
    let pinned = if first.starts_with("pod-a") { 0 } else { 1 };
    assert!(first.starts_with(["pod-a", "pod-b"][pinned]), "{first}");
    for _ in 0..8 {
        let again = line_connect(&t.client, "192.168.10.100", 80);
        assert_eq!(again, first, "affinity did not hold");
    }
    // Remove the pinned endpoint (its pod keeps running and answering): the entry that pins
    // the client to it goes, and new connections reach the other pod.
    let other = 1 - pinned;
    let out = t.apply(&[POD_ADDRS[other]]);
    assert!(
        out.contains("session affinity: 1 entries of removed endpoints deleted"),
        "{out}"
    );
    for _ in 0..8 {
        let answer = line_connect(&t.client, "192.168.10.100", 80);
        assert!(
            answer.starts_with(["pod-a", "pod-b"][other]),
            "a new connection reached {answer}: the removed endpoint still had the client"
        );
    }
}

/// Opens `count` connections one after the other and prints how many each pod answered.
const COUNTING_CLIENT: &str = r#"
import collections, socket, sys
seen = collections.Counter()
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    f = s.makefile("rw")
    f.write("hello\n"); f.flush()
    seen[f.readline().split(" ")[0]] += 1
    s.close()
print(seen["pod-a"], seen["pod-b"])
"#;

#[test]
fn weights_one_to_three_split_new_connections_a_quarter_to_three_quarters() {
    if let Some(reason) = packets_unavailable() {
        return skip(
            "weights_one_to_three_split_new_connections_a_quarter_to_three_quarters",
            &reason,
        );
    }
    let t = TwoPods::new(NFCOMPILE, false);
    t.apply_weighted(&POD_ADDRS, &[1, 3]);
    let out = t.client.exec(&[
        "python3",
        "-c",
        COUNTING_CLIENT,
        "192.168.10.100",
        "80",
        "400",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u32> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        counts.len(),
        2,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counts[0] + counts[1], 400, "every connection was answered");
    // Binomial(400, 1/4): mean 100, standard deviation 8.7; ±40 is 4.6 sigma.
    assert!(
        (60..=140).contains(&counts[0]),
        "pod-a (weight 1) got {} of 400, pod-b (weight 3) {}",
        counts[0],
        counts[1]
    );
    eprintln!(
        "weights 1:3 → pod-a {} / pod-b {} of 400",
        counts[0], counts[1]
    );
}

/// Opens `count` connections one after the other and prints who answered each, in order.
const SEQUENCE_CLIENT: &str = r#"
import socket, sys
out = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    f = s.makefile("rw")
    f.write("hello\n"); f.flush()
    out.append(f.readline().split(" ")[0])
    s.close()
print(" ".join(out))
"#;

#[test]
fn round_robin_takes_endpoints_in_turn() {
    if let Some(reason) = packets_unavailable() {
        return skip("round_robin_takes_endpoints_in_turn", &reason);
    }
    let t = TwoPods::new(NFCOMPILE, false);
    t.apply_with(&POD_ADDRS, &[], Some("roundRobin"));
    let out = t.client.exec(&[
        "python3",
        "-c",
        SEQUENCE_CLIENT,
        "192.168.10.100",
        "80",
        "12",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let seq: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        seq.len(),
        12,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Strict turns: no pod twice in a row, so six each.
    assert!(seq.windows(2).all(|w| w[0] != w[1]), "not in turn: {seq:?}");
    assert_eq!(seq.iter().filter(|p| **p == "pod-a").count(), 6, "{seq:?}");
}

/// From each of the given source addresses, one connection; prints `ADDRESS POD` per line.
const MANY_CLIENTS: &str = r#"
import socket, sys
for src in sys.argv[3:]:
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(3)
    s.connect((sys.argv[1], int(sys.argv[2])))
    f = s.makefile("rw")
    f.write("hello\n"); f.flush()
    print(src, f.readline().split(" ")[0])
    s.close()
"#;

#[test]
fn maglev_keeps_clients_on_their_endpoint_and_moves_few_when_one_goes() {
    if let Some(reason) = packets_unavailable() {
        return skip(
            "maglev_keeps_clients_on_their_endpoint_and_moves_few_when_one_goes",
            &reason,
        );
    }
    let t = TwoPods::new(NFCOMPILE, false);
    // A third endpoint, 192.168.20.22, is a second address of pod A.
    t.pods[0].sh("ip addr add 192.168.20.22/24 dev p0");
    let clients: Vec<String> = (30..90).map(|i| format!("192.168.10.{i}")).collect();
    for c in &clients {
        t.client.sh(&format!("ip addr add {c}/24 dev c0"));
    }
    let three = ["192.168.20.20", "192.168.20.21", "192.168.20.22"];
    t.apply_with(&three, &[], Some("maglev"));
    let ask = || -> std::collections::BTreeMap<String, String> {
        let mut args = vec!["python3", "-c", MANY_CLIENTS, "192.168.10.100", "80"];
        args.extend(clients.iter().map(String::as_str));
        let out = t.client.exec(&args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let map: std::collections::BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(
            map.len(),
            clients.len(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        map
    };
    let first = ask();
    // Every new connection of a client goes where its first one went (no affinity state:
    // the hash of its address decides).
    assert_eq!(
        ask(),
        first,
        "a client changed endpoints without any change"
    );
    let on_b: Vec<&String> = first
        .iter()
        .filter(|(_, p)| *p == "pod-b")
        .map(|(c, _)| c)
        .collect();
    assert!(
        on_b.len() >= 5 && on_b.len() < clients.len(),
        "pod-b has {} of 60 clients",
        on_b.len()
    );
    // Pod A's second address leaves; clients of pod B should stay where they are (a plain
    // hash over the remaining two would move about half of them).
    t.apply_with(&three[..2], &[], Some("maglev"));
    let after = ask();
    let moved = on_b.iter().filter(|c| after[**c] != "pod-b").count();
    assert!(
        moved * 5 <= on_b.len(),
        "{moved} of pod B's {} clients moved when another endpoint left",
        on_b.len()
    );
    eprintln!(
        "maglev: {} clients on pod B, {moved} moved when 192.168.20.22 left",
        on_b.len()
    );
}

/// `nfcompile stats --format json` on the router: (connections, packets, bytes) of the TCP
/// port of `default/web` in IPv4.
fn web_tcp_counts(t: &TwoPods) -> (u64, u64, u64) {
    let out = t.router.ok(
        "stats",
        &[env!("CARGO_BIN_EXE_nfcompile"), "stats", "--format", "json"],
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "web" && r["port"] == "tcp" && r["family"] == "ipv4")
        .unwrap_or_else(|| panic!("no row for default/web:tcp in {out}"));
    let n = |k: &str| row[k].as_u64().unwrap();
    (n("connections"), n("packets"), n("bytes"))
}

#[test]
fn per_service_counters_count_real_connections_and_survive_endpoint_changes() {
    if let Some(reason) = packets_unavailable() {
        return skip(
            "per_service_counters_count_real_connections_and_survive_endpoint_changes",
            &reason,
        );
    }
    let t = TwoPods::new(NFCOMPILE, false);
    // The web service with a node port too, so both counter maps are used.
    let cluster = |endpoints: &[&str]| {
        two_endpoint_cluster(endpoints, false, &[], None).replacen(
            "ports: [{name: tcp, port: 80}",
            "ports: [{name: tcp, port: 80, nodePort: 30080}",
            1,
        )
    };
    t.apply_yaml(&cluster(&POD_ADDRS), &["--counters"]);
    assert_eq!(web_tcp_counts(&t), (0, 0, 0), "counters start at zero");

    // 10 connections to the load-balancer IP, 4 to the node port on the node's primary
    // address (192.168.20.1, reached through the router).
    let run = |ip: &str, port: &str, n: &str| {
        let out = t
            .client
            .exec(&["python3", "-c", COUNTING_CLIENT, ip, port, n]);
        let text = String::from_utf8_lossy(&out.stdout);
        let answered: u32 = text
            .split_whitespace()
            .map(|x| x.parse::<u32>().unwrap())
            .sum();
        assert_eq!(
            answered.to_string(),
            n,
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("192.168.10.100", "80", "10");
    run("192.168.20.1", "30080", "4");
    let (conns, packets, bytes) = web_tcp_counts(&t);
    eprintln!(
        "{}",
        t.router
            .ok("stats", &[env!("CARGO_BIN_EXE_nfcompile"), "stats"])
    );
    assert_eq!(conns, 14, "new connections");
    // Each connection is at least a handshake, a request, an answer and their ACKs and a
    // close, both ways; each IPv4 TCP packet is at least 40 bytes.
    assert!(packets >= 14 * 6, "{packets} packets for 14 connections");
    assert!(bytes >= packets * 40, "{bytes} bytes for {packets} packets");
    // The same counter as nft itself reads it.
    let listed = t.router.ok(
        "nft list",
        &[
            "nft",
            "list",
            "counter",
            "ip",
            "nfcompile",
            "traffic/default/web/tcp/tcp",
        ],
    );
    assert!(
        listed.contains(&format!("packets {packets} bytes {bytes}")),
        "stats said {packets} packets, {bytes} bytes; nft lists {listed}"
    );

    // An endpoint goes (an incremental apply): the counters keep counting from where they were.
    let out = t.apply_yaml(&cluster(&POD_ADDRS[..1]), &["--counters"]);
    assert!(out.contains(" operations,"), "{out}");
    let (after, more, _) = web_tcp_counts(&t);
    assert_eq!(after, 14, "the counters were reset by an endpoint change");
    assert!(more >= packets);
    run("192.168.10.100", "80", "3");
    assert_eq!(web_tcp_counts(&t).0, 17);

    // Applying without --counters removes them, and stats says so.
    t.apply_yaml(&cluster(&POD_ADDRS[..1]), &[]);
    let out = t.router.exec(&[env!("CARGO_BIN_EXE_nfcompile"), "stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no service counters"), "{err}");
}
