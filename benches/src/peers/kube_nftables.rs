//! kube-proxy's nftables mode (pkg/proxy/nftables): a `service-…` chain per service port that
//! marks off-cluster traffic and picks an `endpoint-…` chain with `numgen random mod N vmap
//! { … }` (an anonymous map per service), an `endpoint-…` chain per endpoint that DNATs,
//! `external-…` chains for node ports and load-balancer IPs, per-endpoint affinity sets, and the
//! shared dispatch maps. IPv4 only (the benchmark's clusters are IPv4).

use std::fmt::Write;

use nfcompile::ir::Cluster;

use super::{pod_cidr, ports, proto, tag};

/// The whole `nft -f` script for `cluster`'s node.
pub fn script(cluster: &Cluster) -> String {
    let cidr = pod_cidr(cluster);
    let views = ports(cluster);
    let mut chains = String::new();
    let mut service_ips = Vec::new();
    let mut nodeports = Vec::new();
    let mut no_endpoints = Vec::new();
    let mut cluster_ips = Vec::new();
    let mut affinity_sets = String::new();
    for v in &views {
        let t = &tag(&v.name)[..8];
        let svc_chain = format!("service-{t}-{}", v.name);
        let ext_chain = format!("external-{t}-{}", v.name);
        let p = proto(v.port.protocol);
        let has_external = v.port.node_port.is_some() || !v.svc.load_balancer_ips.is_empty();
        for ip in &v.svc.cluster_ips {
            cluster_ips.push(ip.to_string());
            let target = if v.endpoints.is_empty() {
                no_endpoints.push(format!("{ip} . {p} . {} : goto reject-chain", v.port.port));
                continue;
            } else {
                &svc_chain
            };
            service_ips.push(format!("{ip} . {p} . {} : goto {target}", v.port.port));
        }
        for ip in &v.svc.load_balancer_ips {
            service_ips.push(format!("{ip} . {p} . {} : goto {ext_chain}", v.port.port));
        }
        if let Some(np) = v.port.node_port {
            nodeports.push(format!("{p} . {np} : goto {ext_chain}"));
        }
        if v.endpoints.is_empty() {
            continue;
        }
        // The service chain: masquerade off-cluster clients, then pick an endpoint.
        let _ = writeln!(chains, "\tchain {svc_chain} {{");
        for ip in &v.svc.cluster_ips {
            let _ = writeln!(
                chains,
                "\t\tip daddr {ip} {p} dport {} ip saddr != {cidr} jump mark-for-masquerade",
                v.port.port
            );
        }
        let endpoint_chain = |addr: &str, port: u16| {
            format!(
                "endpoint-{}-{}__{addr}/{port}",
                &tag(&format!("{}{addr}", v.name))[..8],
                v.name
            )
        };
        if let Some(timeout) = v.svc.session_affinity_timeout {
            for (e, port) in &v.endpoints {
                let ec = endpoint_chain(&e.address.to_string(), *port);
                let set = format!(
                    "affinity-{}-{}__{}/{port}",
                    &tag(&format!("{}{}", v.name, e.address))[..8],
                    v.name,
                    e.address
                );
                let _ = writeln!(
                    affinity_sets,
                    "\tset {set} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}"
                );
                let _ = writeln!(chains, "\t\tip saddr @{set} goto {ec}");
            }
        }
        write_numgen(&mut chains, &v.endpoints, &endpoint_chain);
        let _ = writeln!(chains, "\t}}");
        for (e, port) in &v.endpoints {
            let addr = e.address.to_string();
            let _ = writeln!(chains, "\tchain {} {{", endpoint_chain(&addr, *port));
            let _ = writeln!(chains, "\t\tip saddr {addr} jump mark-for-masquerade");
            if v.svc.session_affinity_timeout.is_some() {
                let set = format!(
                    "affinity-{}-{}__{addr}/{port}",
                    &tag(&format!("{}{addr}", v.name))[..8],
                    v.name
                );
                let _ = writeln!(chains, "\t\tupdate @{set} {{ ip saddr }}");
            }
            let _ = writeln!(chains, "\t\tmeta l4proto {p} dnat to {addr}:{port}");
            let _ = writeln!(chains, "\t}}");
        }
        if has_external {
            let _ = writeln!(chains, "\tchain {ext_chain} {{");
            if v.local_policy() {
                let local_chain = format!("local-{t}-{}", v.name);
                let _ = writeln!(
                    chains,
                    "\t\tip saddr {cidr} goto {svc_chain} comment \"short-circuit pod traffic\""
                );
                let _ = writeln!(chains, "\t\tfib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\"");
                let _ = writeln!(chains, "\t\tfib saddr type local goto {svc_chain} comment \"short-circuit local traffic\"");
                let _ = writeln!(chains, "\t\tgoto {local_chain}");
                let _ = writeln!(chains, "\t}}");
                let _ = writeln!(chains, "\tchain {local_chain} {{");
                if v.local.is_empty() {
                    let _ = writeln!(chains, "\t\tdrop comment \"no local endpoints\"");
                } else {
                    write_numgen(&mut chains, &v.local, &endpoint_chain);
                }
            } else {
                let _ = writeln!(chains, "\t\tjump mark-for-masquerade");
                let _ = writeln!(chains, "\t\tgoto {svc_chain}");
            }
            let _ = writeln!(chains, "\t}}");
        }
    }
    let node_ips: Vec<String> = cluster
        .node
        .addresses
        .iter()
        .filter(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    let mut out = String::new();
    out.push_str("table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n\tcomment \"rules for kube-proxy\"\n");
    write_set(
        &mut out,
        "set",
        "cluster-ips",
        "ipv4_addr",
        "Active ClusterIPs",
        &cluster_ips,
    );
    write_set(
        &mut out,
        "set",
        "nodeport-ips",
        "ipv4_addr",
        "IPs that accept NodePort traffic",
        &node_ips,
    );
    write_set(
        &mut out,
        "map",
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "vmap to drop or reject packets to services with no endpoints",
        &no_endpoints,
    );
    write_set(
        &mut out,
        "map",
        "service-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        &service_ips,
    );
    write_set(
        &mut out,
        "map",
        "service-nodeports",
        "inet_proto . inet_service : verdict",
        "NodePort traffic",
        &nodeports,
    );
    out.push_str(&affinity_sets);
    out.push_str(
        "\tchain filter-output { type filter hook output priority -110; ct state new jump service-endpoints-check; }\n\
         \tchain filter-forward { type filter hook forward priority -110; ct state new jump service-endpoints-check; }\n\
         \tchain filter-input { type filter hook input priority -110; ct state new jump service-endpoints-check; }\n\
         \tchain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }\n\
         \tchain reject-chain { reject; }\n\
         \tchain nat-prerouting { type nat hook prerouting priority -100; jump services; }\n\
         \tchain nat-output { type nat hook output priority -100; jump services; }\n\
         \tchain nat-postrouting { type nat hook postrouting priority 100; jump masquerading; }\n\
         \tchain mark-for-masquerade { meta mark set meta mark or 0x4000; }\n\
         \tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark xor 0x4000\n\t\tmasquerade fully-random\n\t}\n\
         \tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t\tip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n\t}\n",
    );
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

/// `numgen random mod N vmap { 0 : goto …, … }`: the anonymous map per service that makes
/// this layout's load time quadratic.
fn write_numgen<E>(out: &mut String, endpoints: &[(E, u16)], chain: &dyn Fn(&str, u16) -> String)
where
    E: std::ops::Deref<Target = nfcompile::ir::Endpoint>,
{
    let arms: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (e, port))| format!("{i} : goto {}", chain(&e.address.to_string(), *port)))
        .collect();
    let _ = writeln!(
        out,
        "\t\tnumgen random mod {} vmap {{ {} }}",
        endpoints.len(),
        arms.join(" , ")
    );
}

fn write_set(
    out: &mut String,
    kind: &str,
    name: &str,
    ty: &str,
    comment: &str,
    elements: &[String],
) {
    let _ = write!(
        out,
        "\t{kind} {name} {{\n\t\ttype {ty}\n\t\tcomment \"{comment}\"\n"
    );
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(",\n\t\t\t"));
    }
    out.push_str("\t}\n");
}
