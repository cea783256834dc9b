//! A handle for proxies that embed nfcompile and sync in a loop (like kube-proxy's).
//!
//! It keeps what it last committed in memory, so a sync costs a diff and a transaction,
//! never a listing of the kernel (which is what makes other proxies slow at scale). Given
//! the cluster ([`Syncer::sync_cluster`]) it can then take changes to single services
//! ([`Syncer::update`]) and compile only those, in time proportional to the change rather
//! than to the cluster (numbers: the README's Performance section). After a failed commit, or when asked, it reads the
//! kernel back: [`Syncer::check_drift`] finds — and can repair — changes made by someone else.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use nfcompile::incremental::Change;
//! use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
//! use nfcompile::ir::Protocol;
//!
//! let web = ServiceBuilder::new("default", "web", "10.96.0.10".parse()?)
//!     .port("http", Protocol::Tcp, 80)
//!     .endpoint("10.244.1.5".parse()?, Some("node-1"), &[("http", 8080)]);
//! let cluster = ClusterBuilder::new("node-1", ["192.168.1.10".parse()?])
//!     .service(web.clone().build())
//!     .build();
//! let mut syncer = nfcompile_netlink::Syncer::new();
//! syncer.sync_cluster(cluster)?; // the whole cluster, once
//! // Later, from a watch of EndpointSlices: only what changed.
//! let web = web
//!     .endpoint("10.244.2.7".parse()?, Some("node-2"), &[("http", 8080)])
//!     .build();
//! let report = syncer.update(&[Change::Upsert(web)])?;
//! println!("{} operations in {:?}", report.operations, report.elapsed);
//! if syncer.check_drift(true)?.operations > 0 {
//!     println!("someone changed our tables; repaired");
//! }
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, Instant};

use nfcompile::diff::{diff, Transaction};
use nfcompile::incremental::{
    stale_in, Change, Holdings, Incremental, Stale, StaleEndpoint, UdpServing,
};
use nfcompile::ir::Cluster;
use nfcompile::model::{Element, Family, Ruleset};

use crate::apply::{ApplyError, Connection};
use crate::readback::{readback_with_generation, ReadbackError, SetReader};

/// Why a sync, or a clean-up after it, failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A transaction was refused or not answered (nothing of it committed, see [`ApplyError`]).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The kernel's tables could not be read.
    #[error(transparent)]
    Readback(#[from] ReadbackError),
    /// The cluster does not compile.
    #[error(transparent)]
    Compile(#[from] nfcompile::CompileError),
    /// [`Syncer::update`] before any [`Syncer::sync_cluster`].
    #[error("update() needs a cluster: call sync_cluster() first")]
    NoCluster,
    /// Without `NFT_MSG_DESTROYSETELEM`, entries kept expiring between reading a map and
    /// deleting from it; the parts that went are deleted, the next sweep tries the rest.
    #[error("entries of set {set} ({family}) kept expiring while being deleted: {removed} deleted, the rest left for the next sweep after {attempts} attempts")]
    Expiring {
        /// The set.
        set: String,
        /// Its table's family, as nft names it (`ip`, `ip6`).
        family: &'static str,
        /// Reads and deletions tried.
        attempts: usize,
        /// Entries deleted meanwhile.
        removed: usize,
    },
}

/// What one sync or drift check did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Operations of the transaction (0: nothing to do).
    pub operations: usize,
    /// Elements added or deleted.
    pub elements: usize,
    /// Netlink messages sent.
    pub messages: usize,
    /// Whether the kernel had to be read first (first sync, or after a failure).
    pub read_back: bool,
    /// Whether only the changed services were compiled (see [`Syncer::update`]).
    pub incremental: bool,
    /// Session-affinity entries deleted because their endpoint left the frontend (the
    /// affinity map is read only when such an endpoint had affinity).
    pub affinity_cleared: usize,
    /// UDP conntrack entries deleted because their endpoint left the frontend (a UDP client
    /// that keeps sending would otherwise stay with it).
    pub udp_flows_cleared: usize,
    /// Clean-ups after the commit that failed, each saying what and why. The commit itself
    /// stands (the rules are in the kernel); the next sync looks for what is left in the
    /// kernel's state and deletes it.
    pub cleanup_failures: Vec<String>,
    /// Wall time of the whole sync, clean-ups included.
    pub elapsed: Duration,
}

/// What the kernel was last made to hold.
enum Committed {
    Model(Ruleset),
    Cluster(Box<Incremental>),
}

/// Keeps the kernel's `nfcompile` tables in step with a cluster or a ruleset, committing only
/// differences (see the module documentation).
#[derive(Default)]
pub struct Syncer {
    /// Kept open between commits (see [`Connection`]); opened on first use.
    connection: Option<Connection>,
    /// Reads the affinity map after endpoints left; kept open for the same reason.
    reader: Option<SetReader>,
    committed: Option<Committed>,
    /// Whether the kernel is known to still hold it (false after a failure or seen drift:
    /// the next sync reads the kernel first).
    trusted: bool,
    /// A clean-up failed: the next sync sweeps the kernel's affinity and conntrack state.
    sweep_pending: bool,
}

impl Syncer {
    /// A syncer that has committed nothing yet: its first sync reads the kernel.
    pub fn new() -> Syncer {
        Syncer::default()
    }

    fn expected(&self) -> Option<Ruleset> {
        match &self.committed {
            None => None,
            Some(Committed::Model(m)) => Some(m.clone()),
            Some(Committed::Cluster(inc)) => Some(inc.expected()),
        }
    }

    /// Make the kernel hold `desired`, committing only what differs from the last sync.
    /// Without the cluster it came from, UDP flows are judged by the maps alone: a flow to an
    /// endpoint that left them goes, even while it still serves (terminating), and no sweep of
    /// UDP flows runs; [`Syncer::sync_cluster`] keeps and sweeps them as kube-proxy does.
    pub fn sync(&mut self, mut desired: Ruleset) -> Result<SyncReport, SyncError> {
        let report = self.sync_model(&mut desired, None)?;
        self.committed = Some(Committed::Model(desired));
        Ok(report)
    }

    /// Compile `cluster` and make the kernel hold it, committing only what differs from the
    /// last sync; afterwards [`Syncer::update`] can take changes to single services.
    pub fn sync_cluster(&mut self, cluster: Cluster) -> Result<SyncReport, SyncError> {
        let mut desired = nfcompile::compile(&cluster)?;
        let report = self.sync_model(&mut desired, Some(&cluster))?;
        self.committed = Some(Committed::Cluster(Box::new(Incremental::new(
            cluster, desired,
        ))));
        Ok(report)
    }

    /// Commit changes to single services, compiling only those. What cannot be done element
    /// by element (see [`nfcompile::incremental`]) falls back to a whole compile and diff.
    pub fn update(&mut self, changes: &[Change]) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let Some(Committed::Cluster(inc)) = &mut self.committed else {
            return Err(SyncError::NoCluster);
        };
        if !self.trusted {
            let cluster = inc.cluster_with(changes);
            return self.sync_cluster(cluster);
        }
        // The changed services' UDP frontends as the kernel serves them now: endpoints that
        // stop serving lose their flows, also those the maps no longer held.
        let udp_of = |inc: &Incremental| {
            let changed = changes.iter().filter_map(|c| {
                let (namespace, name) = c.name();
                inc.service(namespace, name)
            });
            UdpServing::of_services(inc.cluster(), changed)
        };
        let before = udp_of(inc);
        match inc.update(changes) {
            Ok(tx) => {
                self.trusted = false;
                let connection = connect(&mut self.connection)?;
                let mut report = commit(connection, &tx, inc.shells(), None, false, start)?;
                self.trusted = true;
                report.incremental = true;
                let after = udp_of(inc);
                let mut stale = inc.stale(&tx);
                stale.add_lost_udp(&before, &after);
                stale.keep_serving(&after);
                // After a failed clean-up: sweep what the kernel holds (a whole model's cost).
                let pending = self
                    .sweep_pending
                    .then(|| (inc.expected(), UdpServing::of_cluster(inc.cluster())));
                let sweep = pending.as_ref().map(|(desired, udp)| Sweep {
                    desired,
                    udp: Some(udp),
                });
                let cleanup = clean_up(connection, &mut self.reader, inc.shells(), &stale, sweep);
                self.sweep_pending = !cleanup.failures.is_empty();
                cleanup.into_report(&mut report);
                report.elapsed = start.elapsed();
                Ok(report)
            }
            Err(_) => {
                let cluster = inc.cluster_with(changes);
                self.sync_cluster(cluster)
            }
        }
    }

    /// Commit what differs from `desired`, which keeps the set sizes the kernel's sets
    /// already have where they fit ([`nfcompile::diff::keep_capacities`]); `cluster` is where
    /// `desired` came from, if known (the sweep of UDP flows needs it).
    fn sync_model(
        &mut self,
        desired: &mut Ruleset,
        cluster: Option<&Cluster>,
    ) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let (current, generation) = match (self.expected(), self.trusted) {
            (Some(expected), true) => (expected, None),
            _ => {
                let (live, generation) = readback_with_generation()?;
                (live, Some(generation))
            }
        };
        nfcompile::diff::keep_capacities(&current, desired);
        let tx = diff(&current, desired);
        self.trusted = false;
        let connection = connect(&mut self.connection)?;
        let mut report = commit(
            connection,
            &tx,
            desired,
            generation,
            generation.is_some(),
            start,
        )?;
        self.trusted = true;
        // A whole sync also sweeps: what an earlier clean-up left is found in the kernel.
        let mut stale = stale_in(&tx, desired);
        let udp = cluster.map(UdpServing::of_cluster);
        if let Some(udp) = &udp {
            stale.keep_serving(udp);
        }
        let sweep = Sweep {
            desired,
            udp: udp.as_ref(),
        };
        let cleanup = clean_up(connection, &mut self.reader, desired, &stale, Some(sweep));
        self.sweep_pending = !cleanup.failures.is_empty();
        cleanup.into_report(&mut report);
        report.elapsed = start.elapsed();
        Ok(report)
    }

    /// Read the kernel back and compare with the last commit; with `repair`, put it back.
    pub fn check_drift(&mut self, repair: bool) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let Some(expected) = self.expected() else {
            return Ok(SyncReport::default());
        };
        let (live, generation) = readback_with_generation()?;
        let tx = diff(&live, &expected);
        if tx.is_empty() {
            self.trusted = true;
        } else if repair {
            self.trusted = false;
            let connection = connect(&mut self.connection)?;
            let report = commit(connection, &tx, &expected, Some(generation), true, start)?;
            self.trusted = true;
            return Ok(report);
        } else {
            self.trusted = false;
        }
        Ok(SyncReport {
            operations: tx.ops.len(),
            elements: tx.element_changes(),
            read_back: true,
            elapsed: start.elapsed(),
            ..SyncReport::default()
        })
    }
}

fn reader(reader: &mut Option<SetReader>) -> Result<&mut SetReader, ReadbackError> {
    if reader.is_none() {
        *reader = Some(SetReader::open()?);
    }
    Ok(reader.as_mut().expect("just opened"))
}

/// The kept connection, opened (and the kernel's features probed) on first use: an
/// unsupported kernel is named before anything is committed.
fn connect(connection: &mut Option<Connection>) -> Result<&Connection, ApplyError> {
    if connection.is_none() {
        let c = Connection::open()?;
        c.features()?;
        *connection = Some(c);
    }
    Ok(connection.as_ref().expect("just opened"))
}

/// What the clean-up after a commit did (see [`clean_up`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Session-affinity entries deleted.
    pub affinity_cleared: usize,
    /// UDP conntrack entries deleted.
    pub udp_flows_cleared: usize,
    /// The parts that failed, each saying what and why; the others still ran.
    pub failures: Vec<String>,
}

impl Cleanup {
    fn into_report(self, report: &mut SyncReport) {
        report.affinity_cleared = self.affinity_cleared;
        report.udp_flows_cleared = self.udp_flows_cleared;
        report.cleanup_failures = self.failures;
    }
}

/// How often a deletion of affinity entries is tried again when, without
/// `NFT_MSG_DESTROYSETELEM`, an entry expired between reading the map and deleting it.
const REMOVAL_ATTEMPTS: usize = 5;

/// Entries deleted per batch: without `NFT_MSG_DESTROYSETELEM` an entry that expired meanwhile
/// fails its whole batch, so a big map is deleted in parts and only the failed parts are read
/// and tried again.
const REMOVAL_CHUNK: usize = 512;

/// Delete the session-affinity entries of `table` that `stale` describes, or — with `sweep`
/// (the desired state's holdings) — that point anywhere its frontends do not; how many.
fn clear_affinity_of(
    connection: &Connection,
    reader: &mut SetReader,
    table: &nfcompile::model::Table,
    stale: &[&StaleEndpoint],
    sweep: Option<&Holdings>,
) -> Result<usize, SyncError> {
    let Some(set) = table.set(nfcompile::layout::names::AFFINITY) else {
        return Ok(0);
    };
    if stale.is_empty() && sweep.is_none() {
        return Ok(0);
    }
    let read = || -> Result<Vec<Element>, SyncError> {
        Ok(reader
            .elements(table.family, set)?
            .into_iter()
            .filter(|e| {
                stale.iter().any(|s| s.matches(e)) || sweep.is_some_and(|h| h.stale_affinity(e))
            })
            .collect())
    };
    let remove = |entries: &[Element]| connection.remove_elements(table, set, entries).map(|_| ());
    let family = match table.family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    };
    remove_until_gone(read, remove, (&set.name, family))
}

/// Read what must go and delete it in parts of [`REMOVAL_CHUNK`], reading again while a part
/// was refused with ENOENT (an entry expired meanwhile, without `NFT_MSG_DESTROYSETELEM`);
/// how many were deleted. `set` (name, family) names the set in [`SyncError::Expiring`] after
/// [`REMOVAL_ATTEMPTS`].
fn remove_until_gone(
    mut read: impl FnMut() -> Result<Vec<Element>, SyncError>,
    mut remove: impl FnMut(&[Element]) -> Result<(), ApplyError>,
    set: (&str, &'static str),
) -> Result<usize, SyncError> {
    let mut removed = 0;
    for _ in 0..REMOVAL_ATTEMPTS {
        let entries = read()?;
        let mut expired = false;
        for part in entries.chunks(REMOVAL_CHUNK) {
            match remove(part) {
                Ok(()) => removed += part.len(),
                Err(ApplyError::Rejected {
                    errno: libc::ENOENT,
                    ..
                }) => expired = true,
                Err(e) => return Err(e.into()),
            }
        }
        if !expired {
            return Ok(removed);
        }
    }
    Err(SyncError::Expiring {
        set: set.0.to_string(),
        family: set.1,
        attempts: REMOVAL_ATTEMPTS,
        removed,
    })
}

/// Delete the session-affinity entries `stale` describes (see
/// [`nfcompile::incremental::stale_in`]) from the affinity maps of `tables` in the kernel; how
/// many. Call it after the commit that removed the endpoints, so no new entry can point at them.
pub fn clear_affinity(
    connection: &Connection,
    reader: &mut SetReader,
    tables: &Ruleset,
    stale: &[StaleEndpoint],
) -> Result<usize, SyncError> {
    let mut cleared = 0;
    for table in &tables.tables {
        let mine: Vec<&StaleEndpoint> = stale.iter().filter(|s| s.family == table.family).collect();
        cleared += clear_affinity_of(connection, reader, table, &mine, None)?;
    }
    Ok(cleared)
}

/// What a sweep judges the kernel's packet-made state against.
#[derive(Debug, Clone, Copy)]
pub struct Sweep<'a> {
    /// What the kernel holds after the commit: affinity entries pointing elsewhere go.
    pub desired: &'a Ruleset,
    /// The UDP frontends and their serving endpoints ([`UdpServing::of_cluster`] of the
    /// cluster `desired` came from); without it no UDP flow is swept, only those the
    /// transaction made stale go.
    pub udp: Option<&'a UdpServing>,
}

/// After a commit: delete the affinity entries and the UDP conntrack entries that point at
/// endpoints their frontend no longer has — those `stale` (from the transaction) describes,
/// and with `sweep` every such entry the kernel holds, so what a failed clean-up left is found
/// again. `tables` holds the set declarations. Each part runs even if the other failed;
/// failures are reported, not returned: the commit stands.
pub fn clean_up(
    connection: &Connection,
    set_reader: &mut Option<SetReader>,
    tables: &Ruleset,
    stale: &Stale,
    sweep: Option<Sweep<'_>>,
) -> Cleanup {
    let mut out = Cleanup::default();
    let holdings: Vec<(Family, Holdings)> = sweep
        .map(|sw| {
            sw.desired
                .tables
                .iter()
                .map(|t| (t.family, Holdings::of(t)))
                .collect()
        })
        .unwrap_or_default();
    let held = |f: Family| holdings.iter().find(|(x, _)| *x == f).map(|(_, h)| h);
    let affinity = (|| -> Result<usize, SyncError> {
        let mut cleared = 0;
        for table in &tables.tables {
            let mine: Vec<&StaleEndpoint> = stale
                .affinity_entries
                .iter()
                .filter(|s| s.family == table.family)
                .collect();
            let sweep = held(table.family);
            if mine.is_empty() && sweep.is_none()
                || table.set(nfcompile::layout::names::AFFINITY).is_none()
            {
                continue;
            }
            let reader = reader(set_reader)?;
            cleared += clear_affinity_of(connection, reader, table, &mine, sweep)?;
        }
        Ok(cleared)
    })();
    match affinity {
        Ok(n) => out.affinity_cleared = n,
        Err(e) => out.failures.push(format!(
            "deleting session-affinity entries of removed endpoints: {e}"
        )),
    }
    // UDP flows: those the transaction made stale, and with the serving endpoints every flow
    // that one of our frontends DNATed to an endpoint that serves it no more.
    let swept = sweep.and_then(|s| s.udp).filter(|u| !u.is_empty());
    let mut families: Vec<Family> = swept.map(UdpServing::families).unwrap_or_default();
    families.extend(stale.udp_flows.iter().map(|s| s.family));
    families.sort();
    families.dedup();
    let udp = crate::conntrack::delete_flows_where(&families, |family, flow| {
        stale
            .udp_flows
            .iter()
            .any(|s| s.family == family && crate::conntrack::matches(s, flow))
            || swept.is_some_and(|u| crate::conntrack::stale_udp(u, flow))
    });
    match udp {
        Ok(n) => out.udp_flows_cleared = n,
        Err(e) => out.failures.push(format!(
            "deleting UDP conntrack entries of endpoints that left or stopped serving: {e}"
        )),
    }
    out
}

fn commit(
    connection: &Connection,
    tx: &Transaction,
    desired: &Ruleset,
    generation: Option<u32>,
    read_back: bool,
    start: Instant,
) -> Result<SyncReport, SyncError> {
    let summary = connection.apply_transaction(tx, desired, generation)?;
    Ok(SyncReport {
        operations: tx.ops.len(),
        elements: tx.element_changes(),
        messages: summary.messages,
        read_back,
        incremental: false,
        affinity_cleared: 0,
        udp_flows_cleared: 0,
        cleanup_failures: Vec::new(),
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfcompile::model::Value;

    fn entry(n: u32) -> Element {
        Element {
            key: vec![Value::Addr(std::net::Ipv4Addr::from(n).into())],
            data: None,
            comment: None,
        }
    }

    /// A map of `held` entries where, right after read `i`, the first `expire[i]` entries
    /// time out; deletion behaves like NFT_MSG_DELSETELEM: a part holding an entry that is not
    /// there is refused whole, with ENOENT. Returns the result, what is left and the batches.
    fn run(held: u32, expire: &[usize]) -> (Result<usize, SyncError>, usize, usize) {
        let map = std::cell::RefCell::new((0..held).map(entry).collect::<Vec<_>>());
        let (mut reads, mut batches) = (0, 0);
        let read = || {
            let seen = map.borrow().clone();
            let n = expire.get(reads).copied().unwrap_or(0);
            map.borrow_mut().drain(..n);
            reads += 1;
            Ok(seen)
        };
        let remove = |part: &[Element]| {
            batches += 1;
            let mut m = map.borrow_mut();
            if !part.iter().all(|e| m.contains(e)) {
                return Err(ApplyError::Rejected {
                    what: "elements of set affinity".into(),
                    errno: libc::ENOENT,
                    message: "No such file or directory".into(),
                });
            }
            m.retain(|e| !part.contains(e));
            Ok(())
        };
        let result = remove_until_gone(read, remove, ("affinity", "ip"));
        let left = map.borrow().len();
        (result, left, batches)
    }

    #[test]
    fn an_entry_that_expired_meanwhile_costs_a_read_and_only_its_part() {
        // Nothing expires: four parts of 512.
        let (n, left, batches) = run(2000, &[]);
        assert_eq!((n.unwrap(), left, batches), (2000, 0, 4));
        // Entry 0 expires after the first read: its part is refused, the other three go; the
        // second read finds the 511 left of it.
        let (n, left, batches) = run(2000, &[1]);
        assert_eq!((n.unwrap(), left, batches), (1999, 0, 5));
    }

    #[test]
    fn entries_that_keep_expiring_give_up_after_the_last_attempt_and_say_so() {
        let (n, left, _) = run(2000, &[1; REMOVAL_ATTEMPTS]);
        let e = n.unwrap_err().to_string();
        assert!(
            e.contains("kept expiring") && e.contains("1488 deleted"),
            "{e}"
        );
        assert_eq!(left, 512 - REMOVAL_ATTEMPTS);
    }

    #[test]
    fn other_refusals_are_not_retried() {
        let mut calls = 0;
        let e = remove_until_gone(
            || Ok(vec![entry(1)]),
            |_| {
                calls += 1;
                Err(ApplyError::NotPermitted)
            },
            ("affinity", "ip"),
        )
        .unwrap_err();
        assert!(
            matches!(e, SyncError::Apply(ApplyError::NotPermitted)),
            "{e}"
        );
        assert_eq!(calls, 1);
    }
}
