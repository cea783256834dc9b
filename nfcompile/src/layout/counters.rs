//! Per-service-port counters: names of the counter objects, and how to read a name back.
//!
//! Two named counters per service port and family: `traffic/…` counts every packet and byte
//! of connections to any of the port's frontends (both directions, on the node that chose
//! the endpoint), `connections/…` counts new connections that reached the dispatch (after
//! `loadBalancerSourceRanges`), one packet per connection. Frontends reach them through
//! counter maps keyed like the dispatch maps, so the rules stay O(1) and a service that
//! changes endpoints leaves its counters untouched.
//!
//! Names follow kube-proxy's chain names, `namespace/name/protocol/port-name` (the port name
//! is empty for a service's only, unnamed port), behind the counter's kind. nft reads a
//! declared object's name only as an identifier (letters, digits, `/-_.`), and Kubernetes
//! names never hold anything else.

use std::fmt;

use serde::Serialize;

use crate::ir::{Protocol, Service, ServicePort};

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterKind {
    /// Packets and bytes of the port's connections, both directions.
    Traffic,
    /// New connections (its packet count; bytes are those of first packets).
    Connections,
}

impl CounterKind {
    fn prefix(self) -> &'static str {
        match self {
            CounterKind::Traffic => "traffic",
            CounterKind::Connections => "connections",
        }
    }
}

/// One service port, as counters name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub protocol: Protocol,
    /// Empty for an unnamed port.
    pub port: String,
}

impl ServicePortName {
    pub fn of(svc: &Service, port: &ServicePort) -> ServicePortName {
        ServicePortName {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            protocol: port.protocol,
            port: port.name.clone(),
        }
    }

    /// The name of this port's counter of `kind`.
    pub fn counter(&self, kind: CounterKind) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            kind.prefix(),
            self.namespace,
            self.name,
            self.protocol.nft_name(),
            self.port
        )
    }
}

/// `namespace/name:port` (`namespace/name` for an unnamed port), as kube-proxy prints it,
/// with the protocol: `default/web:http/tcp`.
impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/{}", self.protocol.nft_name())
    }
}

/// The kind and service port a counter name stands for; `None` for any other name.
pub fn parse(counter: &str) -> Option<(CounterKind, ServicePortName)> {
    let mut parts = counter.split('/');
    let kind = match parts.next()? {
        "traffic" => CounterKind::Traffic,
        "connections" => CounterKind::Connections,
        _ => return None,
    };
    let namespace = parts.next()?.to_string();
    let name = parts.next()?.to_string();
    let protocol = parts.next()?;
    let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
        .into_iter()
        .find(|p| p.nft_name() == protocol)?;
    let port = parts.next()?.to_string();
    if parts.next().is_some() || namespace.is_empty() || name.is_empty() {
        return None;
    }
    Some((
        kind,
        ServicePortName {
            namespace,
            name,
            protocol,
            port,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = ServicePortName {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
            protocol: Protocol::Udp,
            port: "dns".into(),
        };
        let n = p.counter(CounterKind::Traffic);
        assert_eq!(n, "traffic/kube-system/kube-dns/udp/dns");
        assert_eq!(parse(&n), Some((CounterKind::Traffic, p.clone())));
        assert_eq!(p.to_string(), "kube-system/kube-dns:dns/udp");
        let unnamed = ServicePortName {
            port: String::new(),
            ..p
        };
        let n = unnamed.counter(CounterKind::Connections);
        assert_eq!(n, "connections/kube-system/kube-dns/udp/");
        assert_eq!(parse(&n), Some((CounterKind::Connections, unnamed)));
        for bad in [
            "traffic/a/b/tcp",
            "bytes/a/b/tcp/p",
            "traffic/a/b/icmp/p",
            "x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
