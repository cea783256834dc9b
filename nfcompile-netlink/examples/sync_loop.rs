//! A proxy's sync loop with the embedding handle: `sudo cargo run -p nfcompile-netlink
//! --example sync_loop`. It runs in a network namespace of its own, so it never touches this
//! machine's rules.
use nfcompile::incremental::Change;
use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
use nfcompile::ir::{Cluster, Protocol};
use nfcompile_netlink::{SyncReport, Syncer};

fn cluster(endpoints: &[&str]) -> Cluster {
    let mut web = ServiceBuilder::new("default", "web", "10.96.0.10".parse().unwrap()).port(
        "http",
        Protocol::Tcp,
        80,
    );
    for e in endpoints {
        web = web.endpoint(e.parse().unwrap(), Some("node-1"), &[("http", 8080)]);
    }
    ClusterBuilder::new("node-1", ["192.168.1.10".parse().unwrap()])
        .cluster_cidr("10.244.0.0/16".parse().unwrap())
        .service(web.build())
        .build()
}

fn show(step: &str, r: SyncReport) {
    println!(
        "{step:<32} {:>2} operations, {:>2} elements, {:>2} messages, read back: {:<5} incremental: {:<5} {:>6.2} ms",
        r.operations,
        r.elements,
        r.messages,
        r.read_back,
        r.incremental,
        r.elapsed.as_secs_f64() * 1000.0
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A private network namespace for this thread (and so for everything it programs).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare: {} (run as root)", std::io::Error::last_os_error()).into());
    }
    let mut syncer = Syncer::new();
    show(
        "first sync",
        syncer.sync(nfcompile::compile(&cluster(&["10.244.1.5", "10.244.2.5"]))?)?,
    );
    show(
        "nothing changed",
        syncer.sync(nfcompile::compile(&cluster(&["10.244.1.5", "10.244.2.5"]))?)?,
    );
    show(
        "an endpoint joins",
        syncer.sync(nfcompile::compile(&cluster(&[
            "10.244.1.5",
            "10.244.2.5",
            "10.244.3.5",
        ]))?)?,
    );
    // With the cluster, changes to single services compile only those services.
    show(
        "whole cluster",
        syncer.sync_cluster(cluster(&["10.244.1.5", "10.244.2.5", "10.244.3.5"]))?,
    );
    let web = cluster(&["10.244.1.5", "10.244.3.5"]).services.remove(0);
    show(
        "an endpoint leaves (update)",
        syncer.update(&[Change::Upsert(web)])?,
    );
    show("drift check", syncer.check_drift(true)?);
    std::process::Command::new("nft")
        .args(["flush", "chain", "ip", "nfcompile", "services"])
        .status()?;
    show("drift check after a flush", syncer.check_drift(true)?);
    show("drift check again", syncer.check_drift(true)?);
    Ok(())
}
