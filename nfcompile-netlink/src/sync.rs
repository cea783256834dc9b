//! A handle for proxies that embed nfcompile and sync in a loop (like kube-proxy's).
//!
//! It keeps the last committed ruleset in memory, so a sync costs a diff and a transaction,
//! never a listing of the kernel (which is what makes other proxies slow at scale). After a
//! failed commit, or when asked, it reads the kernel back: [`Syncer::check_drift`] finds —
//! and can repair — changes made by someone else.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use nfcompile::ir::builder::{ClusterBuilder, ServiceBuilder};
//! use nfcompile::ir::Protocol;
//!
//! let mut syncer = nfcompile_netlink::Syncer::new();
//! let cluster = ClusterBuilder::new("node-1", ["192.168.1.10".parse()?])
//!     .service(
//!         ServiceBuilder::new("default", "web", "10.96.0.10".parse()?)
//!             .port("http", Protocol::Tcp, 80)
//!             .endpoint("10.244.1.5".parse()?, Some("node-1"), &[("http", 8080)])
//!             .build(),
//!     )
//!     .build();
//! let report = syncer.sync(nfcompile::compile(&cluster)?)?;
//! println!("{} operations", report.operations);
//! if syncer.check_drift(true)?.operations > 0 {
//!     println!("someone changed our tables; repaired");
//! }
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, Instant};

use nfcompile::diff::{diff, Transaction};
use nfcompile::model::Ruleset;

use crate::apply::{apply_transaction, ApplyError};
use crate::readback::{readback_with_generation, ReadbackError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Readback(#[from] ReadbackError),
}

/// What one sync or drift check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Operations of the transaction (0: nothing to do).
    pub operations: usize,
    /// Elements added or deleted.
    pub elements: usize,
    /// Netlink messages sent.
    pub messages: usize,
    /// Whether the kernel had to be read first (first sync, or after a failure).
    pub read_back: bool,
    pub elapsed: Duration,
}

#[derive(Default)]
pub struct Syncer {
    /// What we last made the kernel hold.
    committed: Option<Ruleset>,
    /// Whether the kernel is known to still hold it (false after a failure or seen drift:
    /// the next sync reads the kernel first).
    trusted: bool,
}

impl Syncer {
    pub fn new() -> Syncer {
        Syncer::default()
    }

    /// Make the kernel hold `desired`, committing only what differs from the last sync.
    pub fn sync(&mut self, desired: Ruleset) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let read = match (&self.committed, self.trusted) {
            (Some(_), true) => None,
            _ => Some(readback_with_generation()?),
        };
        let tx = match (&read, &self.committed) {
            (Some((live, _)), _) => diff(live, &desired),
            (None, Some(committed)) => diff(committed, &desired),
            (None, None) => unreachable!("read when nothing is committed"),
        };
        self.trusted = false;
        let report = commit(
            &tx,
            &desired,
            read.as_ref().map(|(_, g)| *g),
            read.is_some(),
            start,
        )?;
        self.committed = Some(desired);
        self.trusted = true;
        Ok(report)
    }

    /// Read the kernel back and compare with the last commit; with `repair`, put it back.
    pub fn check_drift(&mut self, repair: bool) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let Some(expected) = &self.committed else {
            return Ok(SyncReport::default());
        };
        let (live, generation) = readback_with_generation()?;
        let tx = diff(&live, expected);
        if tx.is_empty() {
            self.trusted = true;
        } else if repair {
            self.trusted = false;
            let report = commit(&tx, expected, Some(generation), true, start)?;
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

fn commit(
    tx: &Transaction,
    desired: &Ruleset,
    generation: Option<u32>,
    read_back: bool,
    start: Instant,
) -> Result<SyncReport, SyncError> {
    let summary = apply_transaction(tx, desired, generation)?;
    Ok(SyncReport {
        operations: tx.ops.len(),
        elements: tx.element_changes(),
        messages: summary.messages,
        read_back,
        elapsed: start.elapsed(),
    })
}
