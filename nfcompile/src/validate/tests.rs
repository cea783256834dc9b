use super::*;
use crate::ir::builder::{ClusterBuilder, ServiceBuilder};
use crate::ir::Protocol;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn errors(c: &Cluster) -> Vec<String> {
    match validate(c) {
        Ok(_) => vec![],
        Err(Invalid(e)) => e.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_generated_cluster_is_valid() {
    let c = crate::synth::cluster(crate::synth::Shape {
        services: 100,
        endpoints: 3,
        nodes: 3,
    });
    assert_eq!(errors(&c), Vec::<String>::new());
}

#[test]
fn native_errors_use_native_field_names() {
    let c = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(
            ServiceBuilder::new("default", "web", ip("10.96.0.1"))
                .port("http", Protocol::Tcp, 80)
                .endpoint(ip("fd00::1"), None, &[("http", 8080)])
                .build(),
        )
        .build();
    assert_eq!(
        errors(&c),
        ["Service default/web: endpoints[0].address fd00::1 is IPv6 but Service default/web has no IPv6 cluster IP"]
    );
}

#[test]
fn a_service_given_twice_is_an_error() {
    let s = ServiceBuilder::new("default", "web", ip("10.96.0.1"))
        .port("http", Protocol::Tcp, 80)
        .build();
    let mut s2 = s.clone();
    s2.cluster_ips = vec![ip("10.96.0.2")];
    let c = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(s)
        .service(s2)
        .build();
    assert_eq!(
        errors(&c),
        ["Service default/web: is given twice (services[0] and services[1])"]
    );
}

#[test]
fn dual_stack_needs_one_address_per_family() {
    let s = ServiceBuilder::new("default", "web", ip("10.96.0.1"))
        .cluster_ip(ip("10.96.0.2"))
        .port("http", Protocol::Tcp, 80)
        .build();
    let c = ClusterBuilder::new("n1", [ip("192.168.0.1")])
        .service(s)
        .build();
    assert_eq!(
        errors(&c),
        ["Service default/web: clusterIPs[1] 10.96.0.2 is a second IPv4 cluster IP"]
    );
}

#[test]
fn interface_names_that_could_break_a_rule_are_refused() {
    let mut c = ClusterBuilder::new("n1", [ip("192.168.0.1")]).build();
    c.config.detect_local = DetectLocal::InterfaceNamePrefix("veth\" accept".into());
    assert_eq!(errors(&c).len(), 1);
}
