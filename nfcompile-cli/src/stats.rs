//! `nfcompile stats`: the per-service-port counters, as a table, Prometheus text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use nfcompile::layout::counters::{self, CounterKind, ServicePortName};
use nfcompile::model::Family;
use nfcompile_netlink::CounterValue;

/// One row: a service port in one family.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Row {
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
}

pub type Rows = BTreeMap<(ServicePortName, Family), Row>;

/// Counters grouped per service port and family; names that are not ours are skipped.
pub fn rows(values: &[CounterValue]) -> Rows {
    let mut out = Rows::new();
    for v in values {
        let Some((kind, port)) = counters::parse(&v.name) else {
            continue;
        };
        let row = out.entry((port, v.family)).or_default();
        match kind {
            CounterKind::Traffic => {
                row.packets = v.packets;
                row.bytes = v.bytes;
            }
            CounterKind::Connections => row.connections = v.packets,
        }
    }
    out
}

fn family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

/// Aligned columns for people.
pub fn table(rows: &Rows) -> String {
    let header = ["SERVICE PORT", "FAMILY", "CONNECTIONS", "PACKETS", "BYTES"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|((port, f), r)| {
            [
                port.to_string(),
                family(*f).to_string(),
                r.connections.to_string(),
                r.packets.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, cell) in width.iter_mut().zip(c) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        // Names left-aligned, numbers right-aligned.
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
        );
    };
    line(header);
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3], &c[4]]);
    }
    out
}

/// A metric: name, help text, and its value in a row.
type Metric = (&'static str, &'static str, fn(&Row) -> u64);

/// The Prometheus text exposition format (version 0.0.4).
pub fn prometheus(rows: &Rows) -> String {
    let metrics: [Metric; 3] = [
        (
            "nfcompile_service_connections_total",
            "New connections to the service port that reached its dispatch (after loadBalancerSourceRanges).",
            |r| r.connections,
        ),
        (
            "nfcompile_service_packets_total",
            "Packets of connections to the service port, both directions, on the node that chose the endpoint.",
            |r| r.packets,
        ),
        (
            "nfcompile_service_bytes_total",
            "Bytes (IP packet length) of connections to the service port, both directions.",
            |r| r.bytes,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for ((port, f), r) in rows {
            // Kubernetes names hold no character the format would need escaped.
            let _ = writeln!(
                out,
                "{name}{{namespace=\"{}\",service=\"{}\",port=\"{}\",protocol=\"{}\",family=\"{}\"}} {}",
                port.namespace,
                port.name,
                port.port,
                port.protocol.nft_name(),
                family(*f),
                value(r)
            );
        }
    }
    out
}

pub fn json(rows: &Rows) -> String {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|((port, f), r)| {
            serde_json::json!({
                "namespace": port.namespace,
                "service": port.name,
                "port": port.port,
                "protocol": port.protocol.nft_name(),
                "family": family(*f),
                "connections": r.connections,
                "packets": r.packets,
                "bytes": r.bytes,
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).expect("serialisable") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, family: Family, packets: u64, bytes: u64) -> CounterValue {
        CounterValue {
            family,
            name: name.into(),
            packets,
            bytes,
        }
    }

    #[test]
    fn counters_group_into_rows_per_port_and_family() {
        let values = [
            value("traffic/default/web/tcp/http", Family::Ipv4, 40, 4000),
            value("connections/default/web/tcp/http", Family::Ipv4, 4, 240),
            value("traffic/default/web/tcp/http", Family::Ipv6, 2, 300),
            value("connections/default/web/tcp/http", Family::Ipv6, 1, 80),
            value("traffic/kube-system/dns/udp/", Family::Ipv4, 7, 700),
            value("connections/kube-system/dns/udp/", Family::Ipv4, 7, 700),
            value("somebody-elses", Family::Ipv4, 1, 1),
        ];
        let rows = rows(&values);
        assert_eq!(rows.len(), 3);
        let t = table(&rows);
        assert_eq!(
            t,
            "SERVICE PORT          FAMILY  CONNECTIONS  PACKETS  BYTES\n\
             default/web:http/tcp  ipv4              4       40   4000\n\
             default/web:http/tcp  ipv6              1        2    300\n\
             kube-system/dns/udp   ipv4              7        7    700\n"
        );
        let p = prometheus(&rows);
        assert!(p.contains("# TYPE nfcompile_service_bytes_total counter\n"));
        assert!(p.contains(
            "nfcompile_service_connections_total{namespace=\"default\",service=\"web\",port=\"http\",protocol=\"tcp\",family=\"ipv6\"} 1\n"
        ));
        assert!(p.contains(
            "nfcompile_service_packets_total{namespace=\"kube-system\",service=\"dns\",port=\"\",protocol=\"udp\",family=\"ipv4\"} 7\n"
        ));
        let j: serde_json::Value = serde_json::from_str(&json(&rows)).unwrap();
        assert_eq!(j[0]["bytes"], 4000);
        assert_eq!(j[2]["port"], "");
    }
}
