//! UDP flows through the compiled rules with real packets: the two-pod router of
//! `test-support`'s `two_pods`, a client that keeps one flow sending while its endpoint leaves,
//! terminates, or is removed behind nfcompile's back.

use nfcompile_test_support as common;

use std::process::{Command, Stdio};

use common::two_pods::{two_endpoint_cluster, TwoPods, POD_ADDRS};
use common::{packets_unavailable, skip, Process};

const NFCOMPILE: &str = env!("CARGO_BIN_EXE_nfcompile");

/// Sends a datagram every 50 ms from one socket (one conntrack flow) and prints each answer;
/// after `first` answers it waits for a line on stdin, then prints `then` more.
const STEADY_UDP_CLIENT: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
def answers(n):
    for _ in range(n):
        s.send(b"ping")
        try:
            print(s.recv(512).decode().strip(), flush=True)
        except socket.timeout:
            print("TIMEOUT", flush=True)
        time.sleep(0.05)
answers(int(sys.argv[3]))
sys.stdin.readline()
answers(int(sys.argv[4]))
"#;

#[test]
fn a_udp_flow_moves_off_a_removed_endpoint() {
    use std::io::{BufRead, BufReader, Write};
    if let Some(reason) = packets_unavailable() {
        return skip("a_udp_flow_moves_off_a_removed_endpoint", &reason);
    }
    let t = TwoPods::new(NFCOMPILE, false);
    t.apply(&POD_ADDRS);
    let mut client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.client.name,
            "timeout",
            "60",
            "python3",
            "-c",
        ])
        .args([STEADY_UDP_CLIENT, "192.168.10.100", "80", "5", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();
    // One flow: every datagram went to the same pod.
    assert!(first.iter().all(|l| *l == first[0]), "{first:?}");
    let pinned = if first[0].starts_with("pod-a") { 0 } else { 1 };
    assert!(
        first[0].starts_with(["pod-a", "pod-b"][pinned]),
        "{first:?}"
    );
    // Remove the endpoint this flow uses (its pod keeps answering): the flow's conntrack entry
    // goes with it and the next datagram is balanced again — to the only endpoint left.
    let other = 1 - pinned;
    let out = t.apply(&[POD_ADDRS[other]]);
    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let then: Vec<String> = (0..10).map(|_| lines.next().unwrap().unwrap()).collect();
    client.wait().unwrap();
    assert!(
        then.iter()
            .all(|l| l.starts_with(["pod-a", "pod-b"][other])),
        "after the removal the flow still reached the old endpoint: {then:?}"
    );
    assert!(
        out.contains("conntrack: 1 UDP flows deleted (their endpoints left or stopped serving)"),
        "{out}"
    );
}

/// Sends datagrams from one socket (one conntrack flow): for each number read from stdin,
/// that many, printing each answer; exits at the end of stdin.
const PHASED_UDP_CLIENT: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
for line in sys.stdin:
    for _ in range(int(line)):
        s.send(b"ping")
        try:
            print(s.recv(512).decode().split(" ")[0], flush=True)
        except socket.timeout:
            print("TIMEOUT", flush=True)
        time.sleep(0.05)
"#;

/// UDP flows as kube-proxy keeps them: a flow to an endpoint that starts terminating but still
/// serves stays with it, though the endpoint left the maps; and a flow that a clean-up never
/// got to (here: the rules were changed by `nft -f`, which cleans up nothing) is found in the
/// kernel's conntrack table by the next `apply`, which has nothing to commit.
#[test]
fn udp_flows_stay_while_their_endpoint_serves_and_a_left_behind_one_is_swept() {
    use std::io::{BufRead, BufReader, Write};
    if let Some(reason) = packets_unavailable() {
        return skip(
            "udp_flows_stay_while_their_endpoint_serves_and_a_left_behind_one_is_swept",
            &reason,
        );
    }
    let t = TwoPods::new(NFCOMPILE, false);
    t.apply(&POD_ADDRS);
    let mut client = Process(
        Command::new("ip")
            .args(["netns", "exec", &t.client.name, "timeout", "90"])
            .args(["python3", "-c", PHASED_UDP_CLIENT, "192.168.10.100", "80"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = client.0.stdin.take().unwrap();
    let mut lines = BufReader::new(client.0.stdout.take().unwrap()).lines();
    let mut send = |n: usize| -> Vec<String> {
        writeln!(stdin, "{n}").unwrap();
        (0..n).map(|_| lines.next().unwrap().unwrap()).collect()
    };
    let first = send(4);
    assert!(first.iter().all(|l| *l == first[0]), "{first:?}");
    let pinned = ["pod-a", "pod-b"]
        .iter()
        .position(|p| first[0] == *p)
        .unwrap_or_else(|| panic!("{first:?}"));
    let other = 1 - pinned;
    // The pinned endpoint starts terminating (still serving): new flows go to the other, this
    // one stays.
    let both = two_endpoint_cluster(&POD_ADDRS, false, &[], None);
    let terminating = both.replace(
        &format!("{{address: {},", POD_ADDRS[pinned]),
        &format!(
            "{{address: {}, ready: false, serving: true, terminating: true,",
            POD_ADDRS[pinned]
        ),
    );
    assert_ne!(terminating, both);
    let out = t.apply_yaml(&terminating, &[]);
    assert!(!out.contains("conntrack:"), "a flow was deleted: {out}");
    let kept = send(4);
    assert!(
        kept.iter().all(|l| *l == first[0]),
        "a flow to a serving endpoint was cut: {kept:?}"
    );
    // It goes, by `nft -f` of nfcompile's script: nobody deletes the flow.
    let gone = two_endpoint_cluster(&[POD_ADDRS[other]], false, &[], None);
    let file = t.dir.join("gone.yaml");
    std::fs::write(&file, &gone).unwrap();
    let script = t.router.ok(
        "render",
        &[
            env!("CARGO_BIN_EXE_nfcompile"),
            "render",
            "-q",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    let script_file = t.dir.join("gone.nft");
    std::fs::write(&script_file, script).unwrap();
    t.router
        .ok("nft -f", &["nft", "-f", script_file.to_str().unwrap()]);
    let left_behind = send(3);
    assert!(
        left_behind.iter().all(|l| *l == first[0]),
        "expected the flow to stay with the removed endpoint until a clean-up: {left_behind:?}"
    );
    // The next apply has nothing to commit, and sweeps the flow.
    let out = t.apply_yaml(&gone, &[]);
    assert!(out.contains("No changes."), "{out}");
    assert!(
        out.contains("conntrack: 1 UDP flows deleted (their endpoints left or stopped serving)"),
        "{out}"
    );
    let then = send(6);
    assert!(
        then.iter().all(|l| *l == ["pod-a", "pod-b"][other]),
        "after the sweep the flow still reached the removed endpoint: {then:?}"
    );
    drop(stdin);
    client.0.wait().unwrap();
}
