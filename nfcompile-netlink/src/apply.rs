//! Programming the running kernel (the network namespace this process is in).

use std::time::{Duration, Instant};

use nfcompile::model::Ruleset;

use crate::encode::{encode, Removal};
use crate::features::KernelFeatures;

use crate::socket::NetlinkSocket;

/// Why a transaction (or the feature probe before it) did not go through. Each batch is
/// atomic: but for [`ApplyError::NoAnswer`], nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The netlink socket could not be opened or used.
    #[error("cannot talk to nf_tables: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel answered EPERM: the process lacks CAP_NET_ADMIN in its network namespace.
    #[error("permission denied: programming nf_tables needs CAP_NET_ADMIN (run as root)")]
    NotPermitted,
    /// The kernel refused one message of the batch, and so the whole batch.
    #[error("the kernel refused {what}: {message} (errno {errno}); nothing was changed")]
    Rejected {
        /// The refused message's object: "rule 3 of chain services (ip nfcompile)", "elements
        /// of set endpoints (ip nfcompile)"…
        what: String,
        /// The kernel's errno.
        errno: i32,
        /// The errno's description, or what the refusal means where it is known.
        message: String,
    },
    /// The kernel's feature probe found that nf_tables lacks something the rules need (see
    /// [`crate::features`]); found before anything is committed.
    #[error("this kernel's nf_tables lacks {feature}, which nfcompile's rules need (errno {errno}); nothing was changed. Supported: Linux 6.1 and newer")]
    Unsupported {
        /// The missing feature and the Linux release that added it.
        feature: &'static str,
        /// What the kernel answered the probe.
        errno: i32,
    },
    /// The kernel committed the feature probe's batch, which it must refuse: its throw-away
    /// table may be left behind.
    #[error("the kernel committed the feature probe's batch instead of refusing it ({detail}); table ip {table} may be left behind: nft delete table ip {table}")]
    ProbeCommitted {
        /// The probe's table.
        table: &'static str,
        /// What it answered instead.
        detail: String,
    },
    /// The ruleset's generation moved since it was read: someone else committed meanwhile.
    #[error("the ruleset changed since it was read (nf_tables generation {read}); nothing was applied, plan again")]
    Changed {
        /// The generation the transaction was planned on.
        read: u32,
    },
    /// Some messages were not answered in time; whether the batch was committed is unknown.
    #[error("no answer from the kernel for {missing} of {expected} messages within {timeout:?}; the transaction may or may not have been committed")]
    NoAnswer {
        /// Messages without an answer.
        missing: usize,
        /// Messages that asked for one.
        expected: usize,
        /// How long the answers were waited for.
        timeout: Duration,
    },
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub tables: usize,
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    pub elements: usize,
    pub messages: usize,
    pub bytes: usize,
    pub elapsed: Duration,
}

/// An open nf_tables socket, for callers that commit often (the [`crate::Syncer`]).
///
/// Closing a netlink socket waits for the kernel to finish releasing the previous
/// transaction's objects (an RCU grace period, milliseconds); a socket kept open pays that
/// in the background instead of on every commit.
pub struct Connection {
    socket: NetlinkSocket,
    /// Probed on first use ([`Connection::features`]).
    features: std::cell::OnceCell<KernelFeatures>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("features", &self.features.get())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn open() -> Result<Connection, ApplyError> {
        Ok(Connection {
            socket: NetlinkSocket::open().map_err(ApplyError::Socket)?,
            features: std::cell::OnceCell::new(),
        })
    }

    /// What this kernel's nf_tables can do, probed once per connection
    /// ([`crate::features::probe`]); [`ApplyError::Unsupported`] names a missing feature the
    /// rules cannot do without.
    pub fn features(&self) -> Result<KernelFeatures, ApplyError> {
        if let Some(f) = self.features.get() {
            return Ok(*f);
        }
        let f = crate::features::probe(&self.socket)?;
        Ok(*self.features.get_or_init(|| f))
    }

    /// Take `features` as this kernel's instead of probing it — for tests that act as an
    /// older kernel. Does nothing once the kernel was probed.
    pub fn assume_features(&self, features: KernelFeatures) {
        let _ = self.features.set(features);
    }

    /// Delete `elements` from `set` of `table` in one transaction (for runtime state, e.g.
    /// session-affinity entries that may expire meanwhile). With `NFT_MSG_DESTROYSETELEM`
    /// (Linux 6.3) an element already gone is no error; without it the kernel refuses the
    /// whole batch with ENOENT ([`ApplyError::Rejected`]): read the set again and retry.
    pub fn remove_elements(
        &self,
        table: &nfcompile::model::Table,
        set: &nfcompile::model::Set,
        elements: &[nfcompile::model::Element],
    ) -> Result<Summary, ApplyError> {
        let start = Instant::now();
        let how = if self.features()?.destroy_elements {
            Removal::Destroy
        } else {
            Removal::Delete
        };
        let encoded = crate::encode::encode_remove_elements(table, set, elements, how);
        // Counts of tables, chains and rules: none.
        send(
            Some(&self.socket),
            encoded,
            &Ruleset::default(),
            start,
            None,
        )
    }

    /// [`apply_transaction`] over this connection.
    pub fn apply_transaction(
        &self,
        tx: &nfcompile::diff::Transaction,
        desired: &Ruleset,
        generation: Option<u32>,
    ) -> Result<Summary, ApplyError> {
        transaction(Some(&self.socket), tx, desired, generation)
    }
}

/// Replace our tables with `ruleset` in one atomic transaction.
pub fn apply(ruleset: &Ruleset) -> Result<Summary, ApplyError> {
    let start = Instant::now();
    send(None, encode(ruleset), ruleset, start, None)
}

/// Carry out `tx` (a diff from what the kernel holds to `desired`) in one atomic transaction.
/// With `generation` (from [`crate::readback::readback_with_generation`]) the kernel refuses
/// the transaction if the ruleset changed since it was read: [`ApplyError::Changed`].
pub fn apply_transaction(
    tx: &nfcompile::diff::Transaction,
    desired: &Ruleset,
    generation: Option<u32>,
) -> Result<Summary, ApplyError> {
    transaction(None, tx, desired, generation)
}

fn transaction(
    socket: Option<&NetlinkSocket>,
    tx: &nfcompile::diff::Transaction,
    desired: &Ruleset,
    generation: Option<u32>,
) -> Result<Summary, ApplyError> {
    let start = Instant::now();
    if tx.is_empty() {
        return Ok(Summary {
            tables: 0,
            chains: 0,
            rules: 0,
            sets: 0,
            elements: 0,
            messages: 0,
            bytes: 0,
            elapsed: start.elapsed(),
        });
    }
    send(
        socket,
        crate::encode::encode_transaction(tx, desired),
        desired,
        start,
        generation,
    )
}

fn send(
    socket: Option<&NetlinkSocket>,
    encoded: crate::encode::Encoded,
    ruleset: &Ruleset,
    start: Instant,
    generation: Option<u32>,
) -> Result<Summary, ApplyError> {
    let own;
    let socket = match socket {
        Some(s) => s,
        None => {
            own = NetlinkSocket::open().map_err(ApplyError::Socket)?;
            &own
        }
    };
    let timeout = Duration::from_secs(60);
    let bytes = encoded.batch.iter().map(|p| p.len()).sum();
    let expected = &encoded.acked;
    let answers = socket
        .transact(&encoded.batch, expected, timeout, generation)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                ApplyError::NotPermitted
            } else {
                ApplyError::Socket(e)
            }
        })?;
    if let Some((seq, errno)) = answers
        .iter()
        .find_map(|(seq, a)| a.err().map(|e| (*seq, e)))
    {
        if errno == libc::EPERM {
            return Err(ApplyError::NotPermitted);
        }
        if let (libc::ERESTART, Some(read)) = (errno, generation) {
            return Err(ApplyError::Changed { read });
        }
        let provenance = encoded.provenance.get(&seq);
        let what = provenance
            .map(|p| p.what.clone())
            .unwrap_or_else(|| format!("message {seq}"));
        // nf_tables answers a set past its declared size with ENFILE, whose usual text
        // ("Too many open files in system") would mislead.
        let message = if errno == libc::ENFILE && provenance.is_some_and(|p| p.adds_elements()) {
            "the set is full (more elements than its declared size)".to_string()
        } else {
            std::io::Error::from_raw_os_error(errno).to_string()
        };
        return Err(ApplyError::Rejected {
            what,
            errno,
            message,
        });
    }
    let acked = expected
        .iter()
        .filter(|seq| answers.contains_key(seq))
        .count();
    if acked < expected.len() {
        return Err(ApplyError::NoAnswer {
            missing: expected.len() - acked,
            expected: expected.len(),
            timeout,
        });
    }
    let count = |f: &dyn Fn(&nfcompile::model::Table) -> usize| ruleset.tables.iter().map(f).sum();
    Ok(Summary {
        tables: ruleset.tables.len(),
        chains: count(&|t| t.chains.len()),
        rules: count(&|t| t.chains.iter().map(|c| c.rules.len()).sum()),
        sets: count(&|t| t.sets.len()),
        elements: encoded.elements,
        messages: encoded.messages,
        bytes,
        elapsed: start.elapsed(),
    })
}
