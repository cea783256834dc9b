//! kube-proxy's iptables mode (pkg/proxy/iptables), as `iptables-restore` input for the nat
//! table: KUBE-SERVICES matches each cluster/LB IP and port, KUBE-SVC-… picks a KUBE-SEP-… with
//! `statistic --mode random` probabilities 1/N, 1/(N-1), …, KUBE-SEP-… DNATs, KUBE-EXT-… marks
//! external traffic (and, for eTP=Local, sends it to KUBE-SVL-…), KUBE-NODEPORTS catches node
//! ports on local addresses, KUBE-POSTROUTING masquerades marked packets. Affinity uses
//! `recent`. IPv4 only.

use std::fmt::Write;

use nfcompile::ir::{Cluster, Endpoint};

use super::{pod_cidr, ports, proto, tag};

pub fn restore_input(cluster: &Cluster) -> String {
    let cidr = pod_cidr(cluster);
    let views = ports(cluster);
    let mut decl = String::new();
    let mut rules = String::new();
    let mut nodeports = String::new();
    for v in &views {
        let t = tag(&v.name);
        let svc = format!("KUBE-SVC-{t}");
        let ext = format!("KUBE-EXT-{t}");
        let svl = format!("KUBE-SVL-{t}");
        let p = proto(v.port.protocol);
        let name = format!("{}/{}:{}", v.svc.namespace, v.svc.name, v.port.name);
        let match_port = format!("-m {p} -p {p}");
        let has_external = v.port.node_port.is_some() || !v.svc.load_balancer_ips.is_empty();
        if v.endpoints.is_empty() {
            continue; // kube-proxy rejects those in the filter table
        }
        let _ = writeln!(decl, ":{svc} - [0:0]");
        for ip in &v.svc.cluster_ips {
            let _ = writeln!(rules, "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" {match_port} -d {ip}/32 --dport {} -j {svc}", v.port.port);
            let _ = writeln!(rules, "-A {svc} -m comment --comment \"{name} cluster IP\" {match_port} -d {ip}/32 --dport {} ! -s {cidr} -j KUBE-MARK-MASQ", v.port.port);
        }
        let sep = |e: &Endpoint, port: u16| {
            format!(
                "KUBE-SEP-{}",
                tag(&format!("{}{}{port}", v.name, e.address))
            )
        };
        write_choice(
            &mut rules,
            &svc,
            &name,
            &v.endpoints,
            &sep,
            v.svc.session_affinity_timeout,
        );
        for (e, port) in &v.endpoints {
            let chain = sep(e, *port);
            let _ = writeln!(decl, ":{chain} - [0:0]");
            let _ = writeln!(
                rules,
                "-A {chain} -m comment --comment \"{name}\" -s {}/32 -j KUBE-MARK-MASQ",
                e.address
            );
            let recent = if v.svc.session_affinity_timeout.is_some() {
                format!(" -m recent --set --name {chain} --mask 255.255.255.255 --rsource")
            } else {
                String::new()
            };
            let _ = writeln!(rules, "-A {chain} -m comment --comment \"{name}\"{recent} {match_port} -j DNAT --to-destination {}:{port}", e.address);
        }
        if has_external {
            let _ = writeln!(decl, ":{ext} - [0:0]");
            for ip in &v.svc.load_balancer_ips {
                let _ = writeln!(rules, "-A KUBE-SERVICES -m comment --comment \"{name} loadbalancer IP\" {match_port} -d {ip}/32 --dport {} -j {ext}", v.port.port);
            }
            if let Some(np) = v.port.node_port {
                let _ = writeln!(nodeports, "-A KUBE-NODEPORTS -m comment --comment \"{name}\" {match_port} --dport {np} -j {ext}");
            }
            if v.local_policy() {
                let _ = writeln!(decl, ":{svl} - [0:0]");
                let _ = writeln!(rules, "-A {ext} -m comment --comment \"pod traffic for {name} external destinations\" -s {cidr} -j {svc}");
                let _ = writeln!(rules, "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ");
                let _ = writeln!(rules, "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}");
                let _ = writeln!(rules, "-A {ext} -j {svl}");
                if v.local.is_empty() {
                    let _ = writeln!(rules, "-A {svl} -m comment --comment \"{name} has no local endpoints\" -j KUBE-MARK-DROP");
                } else {
                    write_choice(
                        &mut rules,
                        &svl,
                        &name,
                        &v.local,
                        &sep,
                        v.svc.session_affinity_timeout,
                    );
                }
            } else {
                let _ = writeln!(rules, "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ");
                let _ = writeln!(rules, "-A {ext} -j {svc}");
            }
        }
    }
    let mut out = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-MARK-DROP - [0:0]\n",
    );
    out.push_str(&decl);
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-MARK-DROP -j MARK --or-mark 0x8000\n",
    );
    out.push_str(&rules);
    out.push_str(&nodeports);
    out.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n");
    out
}

/// Affinity checks first (`recent --rcheck`), then one `statistic` rule per endpoint but the
/// last, with probability 1/(remaining endpoints).
fn write_choice(
    out: &mut String,
    chain: &str,
    name: &str,
    endpoints: &[(&Endpoint, u16)],
    sep: &dyn Fn(&Endpoint, u16) -> String,
    affinity: Option<i32>,
) {
    if let Some(secs) = affinity {
        for (e, port) in endpoints {
            let s = sep(e, *port);
            let _ = writeln!(out, "-A {chain} -m comment --comment \"{name} -> {}:{port}\" -m recent --name {s} --mask 255.255.255.255 --rsource --rcheck --seconds {secs} --reap -j {s}", e.address);
        }
    }
    let n = endpoints.len();
    for (i, (e, port)) in endpoints.iter().enumerate() {
        let s = sep(e, *port);
        if i + 1 < n {
            let _ = writeln!(out, "-A {chain} -m comment --comment \"{name} -> {}:{port}\" -m statistic --mode random --probability {:.11} -j {s}", e.address, 1.0 / (n - i) as f64);
        } else {
            let _ = writeln!(
                out,
                "-A {chain} -m comment --comment \"{name} -> {}:{port}\" -j {s}",
                e.address
            );
        }
    }
}
