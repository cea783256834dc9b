//! The real-packet harness of kube-proxy's flows (the CLI's `tests/kube_proxy.rs`): for one
//! fixture, a node namespace programmed by `nfcompile apply`, a client holding every source
//! that is not the node's, and pods answering on every endpoint address and port; the flows
//! of a fixture probed at once, and what each saw judged against the flow's expectation.

use super::{self as kp, Flow, Observed, Suite};
use crate::{Netns, Process};
use nfcompile::ir::{Cluster, Protocol};
use nfcompile::trace::Origin;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Binds every address × port given, TCP and UDP, prints READY, and answers each connection
/// and datagram with `WHO LOCAL-IP LOCAL-PORT PEER-IP`. Exits when its standard input closes,
/// so it cannot outlive the test even if the test process is killed.
const SERVER: &str = include_str!("server.py");

/// Runs every flow of a JSON list at once, one thread each: up to `tries` new connections
/// (each from a new source port, so a new conntrack entry and a new load-balancing draw),
/// stopping at the first refusal or silence, or once every `want`ed endpoint answered and at
/// least `least` tries were made. One line per try: `INDEX OK <answer>`, `INDEX REFUSED
/// <seconds>`, `INDEX TIMEOUT`, `INDEX DROPPED-LOCALLY` (the output hook dropped it: EPERM) or
/// `INDEX ERROR <message>`.
const PROBE: &str = include_str!("probe.py");

/// Whatever the rules neither translated nor dropped nor rejected, and that is not for the
/// node itself, meets the node's `unreachable` default route; this answers it with a
/// host-unreachable ("no route to host"), which is no outcome of kube-proxy's, so it can
/// never pass for a DROP or a REJECT. The route's own ICMP error would do, but the kernel
/// rate-limits those per source (net.ipv4.route.error_cost, not per namespace): the second
/// of two flows from one client at once would go silent and look dropped. This table's
/// rejections, like nfcompile's, are exempted by the node's `icmp_ratemask` instead. It runs
/// after nfcompile's DNAT (priority -100), so it sees translated destinations.
const UNROUTED: &str = "nft -f - <<'EOF'
table inet kube-proxy-test {
    chain unrouted {
        type filter hook prerouting priority 0; policy accept;
        fib daddr type != local fib daddr oif missing reject with icmpx type host-unreachable
    }
}
EOF";

/// The routing table (and rule preference) of the node's routes into its sink.
const SINK_TABLE: u32 = 100;

/// The pods' echo server names itself so; the node's listener `NODE`.
const POD: &str = "pod";
const NODE: &str = "node";

/// The node's addresses on its two veths (documentation prefixes no fixture uses): the
/// client's gateway, and the pods' gateway, which is also what masquerade rewrites a source to.
const CLIENT_GW4: &str = "192.0.2.1";
const POD_GW4: &str = "192.0.2.2";
const POD_SIDE6: &str = "2001:db8:ffff::2";
const GW6: &str = "fe80::1";

/// At least this many connections per flow that gets answers, so that a flow answered by the
/// wrong place only some of the time is caught; and per expected endpoint this many at most.
/// The load balancer draws among slots that split unevenly between endpoints (one may get a
/// quarter of them): the chance that 24 draws per endpoint miss one stays below 1e-8. The
/// probe stops as soon as every endpoint answered, so the bound costs nothing when all is well.
const MIN_TRIES: usize = 6;
const TRIES_PER_ENDPOINT: usize = 24;

/// Fixtures programmed and probed at once. Most of a fixture's time is waiting (for a DROP's
/// one-second silence, for processes to start), so a few at a time share the two cores well.
const WORKERS: usize = 4;

/// What a flow's expectation is, for the subset's rule and its coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dnat,
    DnatMasq,
    Drop,
    Reject,
    Untouched,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::Dnat,
        Kind::DnatMasq,
        Kind::Drop,
        Kind::Reject,
        Kind::Untouched,
    ];

    /// The kind of `flow`'s expectation.
    pub fn of(flow: &Flow) -> Kind {
        let (output, masq) = flow.expected();
        match (output.trim(), masq) {
            ("DROP", _) => Kind::Drop,
            ("REJECT", _) => Kind::Reject,
            ("", _) => Kind::Untouched,
            (_, true) => Kind::DnatMasq,
            (_, false) => Kind::Dnat,
        }
    }

    /// How reports name it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Dnat => "DNAT",
            Kind::DnatMasq => "DNAT+masq",
            Kind::Drop => "DROP",
            Kind::Reject => "REJECT",
            Kind::Untouched => "untouched",
        }
    }
}

/// One fixture, loaded: its flows, the cluster as nfcompile reads it (for `Flow::origin` and
/// the endpoints), and what the pods namespace must hold.
pub struct Fixture<'a> {
    /// The upstream suite.
    pub suite: &'a Suite,
    /// Its cluster, as nfcompile reads it.
    pub cluster: Cluster,
    /// Every endpoint address: all of them live in the pods namespace.
    endpoints: BTreeSet<IpAddr>,
    /// Every endpoint port: the pods' echo server listens on each, TCP and UDP.
    target_ports: BTreeSet<u16>,
}

impl<'a> Fixture<'a> {
    /// Read the suite's cluster.
    pub fn load(suite: &'a Suite) -> Fixture<'a> {
        let src = nfcompile::front::Source::read(&suite.cluster).unwrap();
        let (cluster, _) = nfcompile::front::load(&[src], Some(&suite.file.node))
            .unwrap_or_else(|e| panic!("{}: {e}", suite.name));
        let endpoints = cluster.services.iter().flat_map(|s| &s.endpoints);
        Fixture {
            suite,
            endpoints: endpoints.clone().map(|e| e.address).collect(),
            target_ports: endpoints
                .flat_map(|e| &e.ports)
                .map(|p| u16::try_from(p.port).expect("endpoint port"))
                .collect(),
            cluster,
        }
    }

    /// Where `flow` comes from, as the tracer names it.
    pub fn origin(&self, flow: &Flow) -> Origin {
        flow.origin(&self.suite.file, &self.cluster)
    }

    /// A nodeIP, or loopback: an address the node answers on itself.
    fn is_the_node(&self, ip: IpAddr) -> bool {
        self.suite.file.node_ips.contains(&ip) || ip.is_loopback()
    }

    /// Whether the node itself sends `flow`: from a nodeIP (`Flow::origin`), or from
    /// loopback, which only a process on the node can use.
    fn sent_by_node(&self, flow: &Flow) -> bool {
        self.origin(flow) == Origin::Node || flow.source.is_loopback()
    }

    /// Why `flow` cannot be observed faithfully in this topology, if it cannot (see the
    /// module's documentation).
    pub fn unobservable(&self, flow: &Flow) -> Option<&'static str> {
        self.on_its_own(flow).or_else(|| {
            (!self.sent_by_node(flow) && self.is_client_address(flow.destination))
                .then_some("the destination is one of the client's own addresses")
        })
    }

    /// Whether the client may hold `ip`: as the source of a flow it may send.
    fn is_client_address(&self, ip: IpAddr) -> bool {
        self.suite
            .file
            .flows
            .iter()
            .any(|f| f.source == ip && !self.sent_by_node(f) && self.on_its_own(f).is_none())
    }

    /// `unobservable`, as far as the flow alone decides.
    fn on_its_own(&self, flow: &Flow) -> Option<&'static str> {
        let kind = Kind::of(flow);
        let from_node = self.sent_by_node(flow);
        if flow.protocol() == Protocol::Sctp {
            Some("SCTP: this kernel cannot open SCTP sockets")
        } else if self.endpoints.contains(&flow.source) {
            Some("hairpin: the source is itself an endpoint")
        } else if !from_node && flow.source == flow.destination {
            Some("the source is the destination: only the node can send it (source-range test)")
        } else if !from_node && flow.destination.is_loopback() {
            Some("loopback destination from off the node")
        } else if kind == Kind::Untouched && !self.is_the_node(flow.destination) {
            Some("untouched towards another host, which this topology does not have")
        } else if from_node && kind == Kind::Drop && !self.is_the_node(flow.destination) {
            Some("DROP from the node off the node: an unhandled packet vanishes the same way")
        } else {
            None
        }
    }

    /// The subset: the first observable flow of each (outcome kind, protocol, family, origin,
    /// loopback source or not).
    pub fn choose(&self) -> Vec<&'a Flow> {
        let mut keys = Vec::new();
        let mut chosen = Vec::new();
        for flow in &self.suite.file.flows {
            if self.unobservable(flow).is_some() {
                continue;
            }
            let key = (
                Kind::of(flow),
                flow.protocol(),
                flow.destination.is_ipv6(),
                self.origin(flow),
                flow.source.is_loopback(),
            );
            if !keys.contains(&key) {
                keys.push(key);
                chosen.push(flow);
            }
        }
        chosen
    }
}

/// Runs the shell command `first` in `ns`, then `ip` on each of `lines`, in one process.
fn batch(ns: &Netns, first: &str, lines: &[String]) {
    ns.sh(&format!(
        "{first} && ip -batch - <<'EOF'\n{}\nEOF",
        lines.join("\n")
    ));
}

/// `script` run in `ns` by the interpreter itself, resolved once (`python3` may be a version
/// manager's shim that costs more to start than the script), isolated and without `site`
/// (the scripts need only the standard library; this halves the start-up).
fn python(ns: &Netns, script: &str) -> Command {
    static PYTHON: OnceLock<String> = OnceLock::new();
    let interpreter = PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("run python3");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if path.is_empty() {
            "python3".into()
        } else {
            path
        }
    });
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.name,
        interpreter,
        "-I",
        "-S",
        "-c",
        script,
    ]);
    cmd
}

/// `ADDR/32` or `ADDR/128 nodad` (no duplicate address detection: the address is usable at
/// once instead of after a second or two).
fn host(ip: IpAddr) -> String {
    if ip.is_ipv6() {
        format!("{ip}/128 nodad")
    } else {
        format!("{ip}/32")
    }
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The node's own addresses: every nodeIP and whatever a test adds (on its loopback), and
/// loopback itself.
struct Local(BTreeSet<IpAddr>);

impl Local {
    fn has(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip) || ip.is_loopback()
    }
}

/// The three namespaces of one fixture, programmed, with their servers running.
pub struct Topology {
    node: Netns,
    client: Netns,
    local: Local,
    _pods: Netns,
    _servers: Vec<Process>,
}

impl Topology {
    /// Namespaces for `fx` that can send `flows`: each source that is not one of the node's
    /// `Local` addresses (the nodeIPs plus `extra_local`) is the client's. The node is
    /// programmed with `nfcompile apply` for the fixture's node.
    pub fn new(nfcompile: &str, fx: &Fixture, flows: &[&Flow], extra_local: &[IpAddr]) -> Topology {
        let self_nfcompile = nfcompile;
        let node = Netns::new("kpnode");
        let client = Netns::new("kpclient");
        let pods = Netns::new("kppods");
        let local = Local(
            fx.suite
                .file
                .node_ips
                .iter()
                .chain(extra_local)
                .copied()
                .collect(),
        );
        let (from_node, from_client): (Vec<&Flow>, Vec<&Flow>) =
            flows.iter().copied().partition(|f| local.has(f.source));
        let sources: BTreeSet<IpAddr> = from_client.iter().map(|f| f.source).collect();
        // The node's own connections need a route before the output hook translates them.
        let off_node: BTreeSet<IpAddr> = from_node
            .iter()
            .map(|f| f.destination)
            .filter(|d| !local.has(*d))
            .collect();

        let mut setup = vec![
            "link set lo up".to_string(),
            // No dummy devices in this kernel: the sink is a veth whose peer stays down, and
            // without ARP, so whatever is routed into it vanishes at once.
            "link add sink type veth peer name sink-peer".into(),
            "link set sink arp off".into(),
            "link set sink up".into(),
            format!("link add vc type veth peer name eth0 netns {}", client.name),
            format!("link add vp type veth peer name eth0 netns {}", pods.name),
            format!("addr add {CLIENT_GW4}/32 dev vc"),
            format!("addr add {GW6}/64 dev vc nodad"),
            format!("addr add {POD_GW4}/32 dev vp"),
            format!("addr add {GW6}/64 dev vp nodad"),
            format!("addr add {POD_SIDE6}/128 dev vp nodad"),
            "link set vc up".into(),
            "link set vp up".into(),
            // Nothing leaves the node but towards an endpoint or a client (see UNROUTED).
            "route add unreachable 0.0.0.0/0".into(),
            "route add unreachable ::/0".into(),
        ];
        setup.extend(
            local
                .0
                .iter()
                .map(|ip| format!("addr add {} dev lo", host(*ip))),
        );
        setup.extend(
            fx.endpoints
                .iter()
                .map(|ip| format!("route add {ip} dev vp")),
        );
        setup.extend(sources.iter().map(|ip| format!("route add {ip} dev vc")));
        // In a table of its own that only the node's own packets consult (`iif lo`): a
        // forwarded packet to the same address must still meet UNROUTED.
        setup.push(format!(
            "rule add iif lo table {SINK_TABLE} pref {SINK_TABLE}"
        ));
        setup.extend(
            off_node
                .iter()
                .map(|ip| format!("route add {ip} dev sink table {SINK_TABLE}")),
        );
        batch(
            &node,
            &format!(
                "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
                 net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
                 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                 net.ipv4.icmp_ratemask=0 net.ipv6.icmp.ratemask=0,2-127 \
                 && ip -6 rule add iif lo table {SINK_TABLE} pref {SINK_TABLE}"
            ),
            &setup,
        );
        for (ns, addrs, gw) in [
            (&client, &sources, CLIENT_GW4),
            (&pods, &fx.endpoints, POD_GW4),
        ] {
            let mut lines = vec!["link set lo up".to_string()];
            lines.extend(
                addrs
                    .iter()
                    .map(|ip| format!("addr add {} dev eth0", host(*ip))),
            );
            lines.extend([
                "link set eth0 up".into(),
                format!("route add {gw}/32 dev eth0"),
                format!("route add 0.0.0.0/0 via {gw}"),
                format!("route add ::/0 via {GW6} dev eth0"),
            ]);
            batch(ns, "sysctl -qw net.ipv6.conf.eth0.accept_dad=0", &lines);
        }

        node.ok(
            "nfcompile apply",
            &[
                self_nfcompile,
                "apply",
                "-q",
                "-f",
                fx.suite.cluster.to_str().unwrap(),
                "--node",
                &fx.suite.file.node,
            ],
        );

        node.sh(UNROUTED);
        let to_node: Vec<&Flow> = flows
            .iter()
            .copied()
            .filter(|f| local.has(f.destination))
            .collect();
        let node_ports: BTreeSet<u16> = to_node.iter().map(|f| f.port).collect();
        let node_addrs: BTreeSet<IpAddr> = local
            .0
            .iter()
            .copied()
            .chain(to_node.iter().map(|f| f.destination))
            .collect();
        let starting = [
            serve(&pods, POD, &fx.endpoints, &fx.target_ports),
            serve(&node, NODE, &node_addrs, &node_ports),
        ];
        Topology {
            node,
            client,
            local,
            _pods: pods,
            _servers: starting.into_iter().flatten().map(ready).collect(),
        }
    }

    /// Sends every flow (from the node when its source is local there, else from the client,
    /// both at once) and returns what each produced, in the order given.
    pub fn run<'f>(&self, flows: &[&'f Flow]) -> Vec<Ran<'f>> {
        let (from_node, from_client): (Vec<&Flow>, Vec<&Flow>) = flows
            .iter()
            .copied()
            .partition(|f| self.local.has(f.source));
        let probes: Vec<_> = [(&self.node, from_node), (&self.client, from_client)]
            .into_iter()
            .filter(|(_, flows)| !flows.is_empty())
            .map(|(ns, flows)| (probe(ns, &flows), flows))
            .collect();
        let mut out = Vec::new();
        for (child, flows) in probes {
            let output = child.wait_with_output().expect("probe");
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "probe failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            for (i, flow) in flows.iter().enumerate() {
                let lines: Vec<String> = text
                    .lines()
                    .filter_map(|l| l.split_once(' '))
                    .filter(|(n, _)| n.parse() == Ok(i))
                    .map(|(_, rest)| rest.to_string())
                    .collect();
                out.push(Ran::new(flow, lines));
            }
        }
        out.sort_by_key(|r| flows.iter().position(|f| std::ptr::eq(*f, r.flow)));
        out
    }
}

/// Starts the echo server in `ns` on every address × port (None when there is nothing to
/// listen on); `ready` waits until it listens, so that both servers start at once.
fn serve(
    ns: &Netns,
    who: &str,
    addrs: &BTreeSet<IpAddr>,
    ports: &BTreeSet<u16>,
) -> Option<(String, Child)> {
    if addrs.is_empty() || ports.is_empty() {
        return None;
    }
    let child = python(ns, SERVER)
        .args([who, &join(addrs), &join(ports)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    Some((format!("the {who} server in {}", ns.name), child))
}

fn ready((what, mut child): (String, Child)) -> Process {
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    if line.trim() != "READY" {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "{what} did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Process(child)
}

/// Starts the probe for `flows` in `ns`.
fn probe(ns: &Netns, flows: &[&Flow]) -> Child {
    let specs: Vec<serde_json::Value> = flows
        .iter()
        .map(|f| {
            let (output, _) = f.expected();
            let want: Vec<(String, u16)> = match Kind::of(f) {
                Kind::Dnat | Kind::DnatMasq => output
                    .split(',')
                    .map(kp::parse_target)
                    .map(|a| (a.ip().to_string(), a.port()))
                    .collect(),
                _ => Vec::new(),
            };
            serde_json::json!({
                "proto": f.protocol().nft_name(),
                "src": f.source.to_string(),
                "dst": f.destination.to_string(),
                "port": f.port,
                "tries": MIN_TRIES.max(TRIES_PER_ENDPOINT * want.len()),
                "least": MIN_TRIES,
                "want": want,
            })
        })
        .collect();
    python(ns, PROBE)
        .arg(serde_json::Value::from(specs).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3")
}

/// One flow sent: what it produced, as the judge sees it, and what fitted no outcome.
pub struct Ran<'f> {
    flow: &'f Flow,
    seen: Observed,
    odd: Vec<String>,
    lines: Vec<String>,
}

impl<'f> Ran<'f> {
    /// Reads the probe's lines for `flow`: an answer from a pod is a DNAT to the address and
    /// port it arrived on, one from the node's listener is "untouched", and either is
    /// masqueraded when the client address seen is not the flow's source.
    pub fn new(flow: &'f Flow, lines: Vec<String>) -> Ran<'f> {
        let mut seen = Observed::default();
        let mut odd = Vec::new();
        for line in &lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["OK", who, ip, port, peer] => {
                    let (Ok(ip), Ok(port), Ok(peer)) =
                        (ip.parse(), port.parse(), peer.parse::<IpAddr>())
                    else {
                        odd.push(line.clone());
                        continue;
                    };
                    seen.masq |= peer != flow.source;
                    match *who {
                        POD => {
                            seen.dnat.insert(SocketAddr::new(ip, port));
                        }
                        NODE => seen.accept = true,
                        _ => odd.push(line.clone()),
                    }
                }
                ["REFUSED", secs] if secs.parse::<f64>().is_ok_and(|s| s < 0.5) => {
                    seen.reject = true
                }
                ["TIMEOUT"] | ["DROPPED-LOCALLY"] => seen.drop = true,
                _ => odd.push(line.clone()),
            }
        }
        if lines.is_empty() {
            odd.push("no result at all".into());
        }
        Ran {
            flow,
            seen,
            odd,
            lines,
        }
    }

    /// Whether what it produced is what upstream expects.
    pub fn passes(&self) -> bool {
        let (output, masq) = self.flow.expected();
        self.odd.is_empty() && kp::judge(output, masq, &self.seen)
    }

    /// A failure report line.
    pub fn describe(&self, suite: &str) -> String {
        let f = self.flow;
        let (output, masq) = f.expected();
        format!(
            "{suite} / {:?} ({} {} → {}:{}): expected {output:?}, masq {masq}; got {}{}\n    {}",
            f.name,
            f.protocol,
            f.source,
            f.destination,
            f.port,
            self.seen,
            if self.odd.is_empty() {
                String::new()
            } else {
                format!(", and what fits no outcome: {:?}", self.odd)
            },
            self.lines.join(" | ")
        )
    }
}

/// Runs `run` for each item on `WORKERS` threads; the results in the items' order. A panic
/// in one (a namespace that cannot be set up) fails the test with its own message.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], run: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(item) = items.get(i) else {
                            return mine;
                        };
                        mine.push((i, run(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
