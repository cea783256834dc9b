//! kube-proxy's own rulesets for an nfcompile cluster, so the scale benchmark can load what the
//! peers would load for the same Services and EndpointSlices. Generated the way kube-proxy's
//! proxiers write them (chain per service port, chain per endpoint, random choice per service),
//! from its source and published test dumps; only what matters for load time and the datapath
//! is kept (no filter-table health-check rules, no topology hints).

pub mod kube_iptables;
pub mod kube_nftables;

use nfcompile::ir::{Cluster, Endpoint, Protocol, Service, ServicePort, TrafficPolicy};

/// A stable 16-character base32 tag, as kube-proxy derives chain names from a hash of the
/// service port (it uses SHA-256; any stable hash gives the same shape).
pub fn tag(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..16)
        .map(|i| ALPHABET[((h >> ((i * 4) % 60)) as usize + i) % 32] as char)
        .collect()
}

/// The cluster CIDR kube-proxy's local-traffic detector compares sources with.
pub fn pod_cidr(cluster: &Cluster) -> String {
    cluster
        .config
        .cluster_cidrs
        .first()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "10.0.0.0/8".into())
}

pub fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// One service port with the endpoints that serve it, as the proxiers iterate them.
pub struct PortView<'a> {
    pub svc: &'a Service,
    pub port: &'a ServicePort,
    /// `namespace/name:port` for comments, `namespace/name/proto/port` for nftables names.
    pub name: String,
    /// (address, target port) of every ready endpoint.
    pub endpoints: Vec<(&'a Endpoint, u16)>,
    /// The subset on this node (eTP=Local).
    pub local: Vec<(&'a Endpoint, u16)>,
}

impl PortView<'_> {
    pub fn local_policy(&self) -> bool {
        self.svc.external_traffic_policy == TrafficPolicy::Local
    }
}

pub fn ports(cluster: &Cluster) -> Vec<PortView<'_>> {
    let mut out = Vec::new();
    for svc in &cluster.services {
        for port in &svc.ports {
            let endpoints: Vec<(&Endpoint, u16)> = svc
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .filter_map(|e| {
                    e.ports
                        .iter()
                        .find(|p| p.name == port.name && p.protocol == port.protocol)
                        .map(|p| (e, p.port as u16))
                })
                .collect();
            let local = endpoints
                .iter()
                .filter(|(e, _)| e.node_name.as_deref() == Some(cluster.node.name.as_str()))
                .copied()
                .collect();
            out.push(PortView {
                svc,
                port,
                name: format!(
                    "{}/{}/{}/{}",
                    svc.namespace,
                    svc.name,
                    proto(port.protocol),
                    port.name
                ),
                endpoints,
                local,
            });
        }
    }
    out
}
