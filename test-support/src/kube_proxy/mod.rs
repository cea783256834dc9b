//! kube-proxy's own packet-flow expectations (`nfcompile/tests/kube-proxy/`, see its README):
//! the fixtures, and how one flow's result — traced, or seen with real packets — is judged
//! against upstream's `output` and `masq`. The tracer runs every flow
//! (nfcompile/tests/kube_proxy.rs); real packets run a subset (nfcompile-cli/tests/kube_proxy.rs).

pub mod network;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use nfcompile::ir::{Cluster, Protocol};
use nfcompile::trace::Origin;
use serde::Deserialize;

/// One `NAME.flows.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFile {
    pub upstream: Upstream,
    pub node: String,
    /// runPacketFlowTests' `nodeIPs`: what `fib saddr/daddr type local` says is local.
    #[serde(rename = "nodeIPs")]
    pub node_ips: Vec<IpAddr>,
    pub flows: Vec<Flow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub file: String,
    pub commit: String,
    pub test: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub name: String,
    pub source: IpAddr,
    #[serde(default = "tcp")]
    pub protocol: String,
    pub destination: IpAddr,
    pub port: u16,
    /// Upstream's: `IP:port, IP:port`, `DROP`, `REJECT` or `""` (untouched).
    pub output: String,
    pub masq: bool,
    /// Why nfcompile deliberately differs here; `ours` is what it does instead.
    #[serde(default)]
    pub differs: Option<String>,
    #[serde(default)]
    pub ours: Option<Ours>,
}

fn tcp() -> String {
    "TCP".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ours {
    pub output: String,
    pub masq: bool,
}

impl Flow {
    pub fn protocol(&self) -> Protocol {
        match self.protocol.as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => panic!("flow {:?}: unknown protocol {other}", self.name),
        }
    }

    /// What nfcompile must do: upstream's expectation, or ours where it deliberately differs.
    pub fn expected(&self) -> (&str, bool) {
        match (&self.differs, &self.ours) {
            (Some(_), Some(o)) => (&o.output, o.masq),
            (None, None) => (&self.output, self.masq),
            _ => panic!("flow {:?}: `differs` and `ours` go together", self.name),
        }
    }

    /// Where the packet comes from, as upstream's tracer sees it: a node IP is the node itself
    /// (`fib saddr type local`), a source in the cluster CIDR a pod, anything else the network.
    pub fn origin(&self, file: &FlowFile, cluster: &Cluster) -> Origin {
        if file.node_ips.contains(&self.source) {
            Origin::Node
        } else if cluster
            .config
            .cluster_cidrs
            .iter()
            .any(|c| c.contains(self.source))
        {
            Origin::Pod
        } else {
            Origin::External
        }
    }
}

/// One upstream test (or variant): its objects and its flows.
pub struct Suite {
    /// `nftables/TestLoadBalancer`.
    pub name: String,
    pub cluster: PathBuf,
    pub file: FlowFile,
}

/// The fixtures folder.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates live in the workspace root")
        .join("nfcompile/tests/kube-proxy")
}

/// Every suite of both upstream files, sorted.
pub fn suites() -> Vec<Suite> {
    let mut out = Vec::new();
    for mode in ["nftables", "iptables"] {
        let folder = dir().join(mode);
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = file_name.strip_suffix(".flows.yaml") else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let file: FlowFile =
                serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let cluster = folder.join(format!("{stem}.yaml"));
            assert!(
                cluster.exists(),
                "{} has no {}",
                path.display(),
                cluster.display()
            );
            out.push(Suite {
                name: format!("{mode}/{stem}"),
                cluster,
                file,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What one flow produced: every way its first packet went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observed {
    pub dnat: BTreeSet<SocketAddr>,
    pub drop: bool,
    pub reject: bool,
    /// Passed through without DNAT.
    pub accept: bool,
    /// Some way was masqueraded.
    pub masq: bool,
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self.dnat.iter().map(|a| a.to_string()).collect();
        if self.drop {
            parts.push("DROP".into());
        }
        if self.reject {
            parts.push("REJECT".into());
        }
        if self.accept {
            parts.push("\"\" (untouched)".into());
        }
        write!(f, "{}, masq {}", parts.join(", "), self.masq)
    }
}

/// An endpoint as kube-proxy writes it (`10.0.0.1:80`, `[fd00::1]:80`) or the tracer does.
pub fn parse_target(text: &str) -> SocketAddr {
    let text = text.trim();
    if let Ok(a) = text.parse() {
        return a;
    }
    let (ip, port) = text
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("not an endpoint: {text:?}"));
    SocketAddr::new(
        ip.trim_matches(['[', ']'])
            .parse()
            .expect("endpoint address"),
        port.parse().expect("endpoint port"),
    )
}

/// Whether `got` is what upstream's `output` and `masq` say: the same set of DNAT targets and
/// nothing dropped or rejected on the way; DROP, REJECT and "" on every way; masquerade iff
/// upstream marks the packet.
pub fn judge(output: &str, masq: bool, got: &Observed) -> bool {
    let expected = match output.trim() {
        "DROP" => Observed {
            drop: true,
            ..Default::default()
        },
        "REJECT" => Observed {
            reject: true,
            ..Default::default()
        },
        "" => Observed {
            accept: true,
            ..Default::default()
        },
        list => Observed {
            dnat: list.split(',').map(parse_target).collect(),
            ..Default::default()
        },
    };
    let mut got = got.clone();
    let got_masq = std::mem::take(&mut got.masq);
    got == expected && got_masq == masq
}
