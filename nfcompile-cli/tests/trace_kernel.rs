//! The tracer against the kernel: for random clusters (`synth::random`), every IPv4 TCP/UDP
//! frontend is probed with real packets from an external client, a pod and the node itself, and
//! each way the packets went must be one the tracer predicted (and what it predicts as likely
//! must show up).
//!
//! ```text
//!  client 192.168.0.100 ── ext0 ┐                     ┌ sink0 198.18.0.1 ── sink 198.18.0.2
//!  pod 10.128.255.200 ── <pod>  ├ node (nfcompile apply) default route ──┘  (captures, never answers)
//! ```
//!
//! The sink owns no endpoint address: everything the node forwards (DNATed or not) arrives there
//! and is captured with a packet socket, so its destination and source tell which endpoint was
//! chosen and whether it was masqueraded. Refusals come back to the sender; silence is a drop.
//! The pod's link is named after the cluster's pod-detection mode (`veth…`, `cni0`).

use nfcompile_test_support as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use common::{packets_unavailable, skip, Netns};
use nfcompile::ir::{Cluster, DetectLocal, Protocol};
use nfcompile::trace::{self, Origin, Packet};

const CLIENT: &str = "192.168.0.100";
const POD: &str = "10.128.255.200";
const NODE_SINK_SIDE: &str = "198.18.0.1";

/// Sends every job's tries at once (new sockets, so new flows), waits, then reads refusals from
/// the sockets and arrivals from a packet socket in the sink namespace. One JSON line per job.
const PROBER: &str = r#"
import ctypes, errno, json, os, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def enter(name):
    fd = os.open("/run/netns/" + name, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns " + name)
    os.close(fd)
cfg = json.load(sys.stdin)
enter(cfg["sink"])
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
raw.bind(("eth0", 0))
raw.setblocking(False)
def drain():
    out = []
    while True:
        try:
            f = raw.recv(65535)
        except BlockingIOError:
            return out
        ip = f[14:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl, proto = (ip[0] & 15) * 4, ip[9]
        l4 = ip[ihl:]
        if proto == 6 and (l4[13] & 0x12) != 0x02:
            continue
        if proto not in (6, 17):
            continue
        out.append([socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), struct.unpack("!H", l4[2:4])[0]])
for job in cfg["jobs"]:
    drain()
    enter(job["ns"])
    socks, refused = [], 0
    for i in range(job["tries"]):
        tcp = job["proto"] == "tcp"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        s.bind((job["src"], 0))
        s.setblocking(False)
        e = s.connect_ex((job["dst"], job["port"]))
        if not tcp and e == 0:
            try:
                s.send(b"probe")
            except OSError as x:
                e = x.errno
        # A packet the node's own output hook rejects fails its send with EPERM (the verdict
        # is a drop) and the ICMP error arrives on the socket as well: wait for it.
        if e in (0, errno.EINPROGRESS) or (not tcp and e == errno.EPERM):
            socks.append(s)
        else:
            refused += e == errno.ECONNREFUSED
            s.close()
    time.sleep(cfg["wait"])
    for s in socks:
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if e == 0 and s.type == socket.SOCK_DGRAM:
            try:
                s.recv(64)
            except BlockingIOError:
                pass
            except OSError as x:
                e = x.errno
        refused += e == errno.ECONNREFUSED
        s.close()
    print(json.dumps({"refused": refused, "arrivals": drain()}), flush=True)
"#;

/// How one packet went, as both sides can tell it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    /// Reached the network with this destination, masqueraded or not.
    Dnat(String, bool),
    /// Left untouched (no service rule), masqueraded or not.
    Pass(bool),
    /// Refused: a rule's `reject`, or the node's own stack with nothing listening.
    Refused,
    /// Silence.
    Dropped,
}

struct Job {
    from: Origin,
    proto: Protocol,
    dst: IpAddr,
    port: u16,
    affinity: bool,
}

fn v4(a: &IpAddr) -> bool {
    a.is_ipv4()
}

/// Every IPv4 TCP/UDP frontend, from the origins that reach it, plus a wrong port, an
/// unallocated service address and an address no service has.
fn jobs(cluster: &Cluster) -> Vec<Job> {
    let mut out = Vec::new();
    let mut push = |from, proto, dst: IpAddr, port: i32, affinity| {
        out.push(Job {
            from,
            proto,
            dst,
            port: port as u16,
            affinity,
        })
    };
    use Origin::{External, Node, Pod};
    for svc in &cluster.services {
        let aff = svc.session_affinity_timeout.is_some();
        for p in &svc.ports {
            if p.protocol == Protocol::Sctp {
                continue;
            }
            for ip in svc.cluster_ips.iter().filter(|a| v4(a)) {
                for from in [Pod, Node, External] {
                    push(from, p.protocol, *ip, p.port, aff);
                }
                push(Pod, p.protocol, *ip, p.port + 7, aff);
            }
            for ip in svc
                .load_balancer_ips
                .iter()
                .chain(&svc.external_ips)
                .filter(|a| v4(a))
            {
                for from in [External, Pod] {
                    push(from, p.protocol, *ip, p.port, aff);
                }
            }
            if let Some(np) = p.node_port {
                for ip in cluster.node.addresses.iter().filter(|a| v4(a)) {
                    for from in [External, Node] {
                        push(from, p.protocol, *ip, np, aff);
                    }
                }
            }
        }
    }
    push(
        Pod,
        Protocol::Tcp,
        "10.96.255.250".parse().unwrap(),
        80,
        false,
    );
    push(
        External,
        Protocol::Udp,
        "198.51.100.9".parse().unwrap(),
        53,
        false,
    );
    out
}

fn source(from: Origin, cluster: &Cluster) -> IpAddr {
    match from {
        Origin::External => CLIENT.parse().unwrap(),
        Origin::Pod => POD.parse().unwrap(),
        Origin::Node => cluster.node.addresses[0],
    }
}

/// What the tracer says, with probabilities, in the terms real packets can show.
fn predict(
    ruleset: &nfcompile::model::Ruleset,
    cluster: &Cluster,
    job: &Job,
) -> BTreeMap<Way, f64> {
    let packet = Packet {
        proto: job.proto,
        src: source(job.from, cluster),
        src_port: 40000,
        dst: job.dst,
        dst_port: job.port,
        origin: job.from,
    };
    let t = trace::trace(ruleset, &cluster.node.addresses, &packet).unwrap();
    let mut out = BTreeMap::new();
    for b in t.branches {
        let way = match b.outcome {
            trace::Outcome::Dnat { to, masquerade } => Way::Dnat(to, masquerade),
            trace::Outcome::Drop => Way::Dropped,
            trace::Outcome::Reject => Way::Refused,
            // Nothing listens on the node itself.
            trace::Outcome::Accept { .. } if cluster.node.addresses.contains(&job.dst) => {
                Way::Refused
            }
            trace::Outcome::Accept { masquerade } => Way::Pass(masquerade),
        };
        *out.entry(way).or_insert(0.0) += b.probability;
    }
    out
}

struct Topology {
    client: Netns,
    pod: Netns,
    node: Netns,
    sink: Netns,
}

impl Topology {
    fn new(cluster: &Cluster) -> Topology {
        let t = Topology {
            client: Netns::new("client"),
            pod: Netns::new("pod"),
            node: Netns::new("node"),
            sink: Netns::new("sink"),
        };
        let pod_link = match &cluster.config.detect_local {
            DetectLocal::InterfaceNamePrefix(p) => format!("{p}pod"),
            DetectLocal::BridgeInterface(b) => b.clone(),
            _ => "pod0".to_string(),
        };
        let node = &t.node;
        node.sh(&format!(
            "ip link add ext0 type veth peer name eth0 netns {c} && ip link add {pod_link} type veth peer name eth0 netns {p} \
             && ip link add sink0 type veth peer name eth0 netns {s} \
             && ip addr add 192.168.0.1/24 dev ext0 && ip addr add {NODE_SINK_SIDE}/24 dev sink0 && ip addr add 169.254.1.1/32 dev {pod_link} \
             && ip link set lo up && ip link set ext0 up && ip link set sink0 up && ip link set {pod_link} up \
             && ip route add {POD}/32 dev {pod_link} && ip route add default via 198.18.0.2 \
             && sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.icmp_ratelimit=0",
            c = t.client.name, p = t.pod.name, s = t.sink.name,
        ));
        for a in cluster.node.addresses.iter().skip(1).filter(|a| v4(a)) {
            node.sh(&format!("ip addr add {a}/32 dev ext0"));
        }
        t.client.sh(&format!("ip addr add {CLIENT}/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 192.168.0.1"));
        t.pod.sh(&format!("ip addr add {POD}/32 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add 169.254.1.1 dev eth0 && ip route add default via 169.254.1.1 dev eth0"));
        t.sink
            .sh("ip addr add 198.18.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up");
        t
    }

    fn namespace(&self, from: Origin) -> &Netns {
        match from {
            Origin::External => &self.client,
            Origin::Pod => &self.pod,
            Origin::Node => &self.node,
        }
    }
}

/// Tries per job: a few when the tracer sees one way only, enough to see every likely way
/// otherwise (a way of probability 0.2 is missed by 24 tries one time in 200).
fn tries(predicted: &BTreeMap<Way, f64>) -> usize {
    if predicted.len() == 1 {
        3
    } else {
        24
    }
}

fn observe(
    report: &serde_json::Value,
    job: &Job,
    src: IpAddr,
    tries: usize,
) -> Result<BTreeMap<Way, usize>, String> {
    let mut out = BTreeMap::new();
    let refused = report["refused"].as_u64().unwrap() as usize;
    let arrivals = report["arrivals"].as_array().unwrap();
    for a in arrivals {
        let (s, d, port) = (
            a[0].as_str().unwrap(),
            a[1].as_str().unwrap(),
            a[2].as_u64().unwrap() as u16,
        );
        let masq = if s == src.to_string() {
            false
        } else if s == NODE_SINK_SIDE {
            true
        } else {
            return Err(format!("a packet arrived from {s}"));
        };
        let way = if d == job.dst.to_string() && port == job.port {
            Way::Pass(masq)
        } else {
            Way::Dnat(format!("{d}:{port}"), masq)
        };
        *out.entry(way).or_insert(0) += 1;
    }
    if refused > 0 {
        out.insert(Way::Refused, refused);
    }
    let silent = tries
        .checked_sub(refused + arrivals.len())
        .ok_or_else(|| format!("{} answers to {tries} tries", refused + arrivals.len()))?;
    if silent > 0 {
        out.insert(Way::Dropped, silent);
    }
    Ok(out)
}

#[test]
fn the_tracer_predicts_what_real_packets_do() {
    if let Some(reason) = packets_unavailable() {
        return skip("the_tracer_predicts_what_real_packets_do", &reason);
    }
    let dir = std::env::temp_dir().join(format!("nfc-trace-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut ways, mut jobs_run, mut likely, mut likely_seen) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for seed in 0..6u64 {
        let generated = nfcompile::synth::random(seed, 8);
        // Through the file the CLI reads, so the tracer sees what `apply` loads.
        let mut doc = serde_json::to_value(&generated).unwrap();
        doc["apiVersion"] = nfcompile::front::NATIVE_API_VERSION.into();
        doc["kind"] = "Cluster".into();
        let file = dir.join(format!("cluster-{seed}.json"));
        std::fs::write(&file, doc.to_string()).unwrap();
        let src = nfcompile::front::Source::read(&file).unwrap();
        let (cluster, _) = nfcompile::front::load(&[src], None).unwrap();
        let ruleset = nfcompile::compile(&cluster).unwrap();

        let topo = Topology::new(&cluster);
        let apply = [env!("CARGO_BIN_EXE_nfcompile"), "apply", "-q", "-f"];
        let file_arg = file.to_str().unwrap();
        topo.node.ok(
            &format!("apply seed {seed}"),
            &[&apply[..], &[file_arg]].concat(),
        );

        let jobs = jobs(&cluster);
        let predicted: Vec<BTreeMap<Way, f64>> = jobs
            .iter()
            .map(|j| predict(&ruleset, &cluster, j))
            .collect();
        let spec: Vec<serde_json::Value> = jobs
            .iter()
            .zip(&predicted)
            .map(|(j, p)| {
                serde_json::json!({
                    "ns": topo.namespace(j.from).name,
                    "src": source(j.from, &cluster).to_string(),
                    "proto": if j.proto == Protocol::Tcp { "tcp" } else { "udp" },
                    "dst": j.dst.to_string(),
                    "port": j.port,
                    "tries": tries(p),
                })
            })
            .collect();
        let mut prober = Command::new("python3")
            .args(["-c", PROBER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let cfg = serde_json::json!({"sink": topo.sink.name, "wait": 0.1, "jobs": spec});
        prober
            .stdin
            .take()
            .unwrap()
            .write_all(cfg.to_string().as_bytes())
            .unwrap();
        let out = prober.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "prober: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(reports.len(), jobs.len());

        for ((job, p), report) in jobs.iter().zip(&predicted).zip(&reports) {
            jobs_run += 1;
            let what = format!(
                "seed {seed}: {:?} {:?} → {}:{}",
                job.from, job.proto, job.dst, job.port
            );
            let seen = match observe(report, job, source(job.from, &cluster), tries(p)) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{what}: {e}"));
                    continue;
                }
            };
            let unpredicted: BTreeSet<&Way> = seen.keys().filter(|w| !p.contains_key(*w)).collect();
            if !unpredicted.is_empty() {
                failures.push(format!("{what}: real packets went {unpredicted:?}, the tracer said {p:?} (seen {seen:?})"));
            }
            ways += p.len();
            // Affinity sends every later packet where the first one went.
            if !job.affinity {
                for (w, prob) in p {
                    if *prob >= 0.2 {
                        likely += 1;
                        if seen.contains_key(w) {
                            likely_seen += 1;
                        } else {
                            eprintln!(
                                "{what}: {w:?} (p = {prob:.2}) not seen in {} tries: {seen:?}",
                                tries(p)
                            );
                        }
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{jobs_run} probe jobs, {ways} predicted ways, {likely_seen} of {likely} likely ways seen"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(jobs_run > 100, "too few frontends probed: {jobs_run}");
    assert!(
        likely_seen * 100 >= likely * 95,
        "only {likely_seen} of {likely} likely ways were seen"
    );
}
