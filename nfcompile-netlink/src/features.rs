//! What the running kernel's nf_tables can do, asked once per connection.
//!
//! Supported kernels: Linux 6.1 and newer (tested: Debian 12's 6.1, the 6.12 LTS, 6.18).
//! The layout needs interval concatenations (sets of `address . port . address-range`, for
//! `loadBalancerSourceRanges`; Linux 5.6). `NFT_MSG_DESTROYSETELEM` (Linux 6.3) deletes
//! runtime state (session-affinity entries) that may expire meanwhile; without it the
//! deletion uses `NFT_MSG_DELSETELEM` and reads the map again when an entry was already gone.
//!
//! The probe is one batch the kernel aborts: a throw-away table with an interval
//! concatenation set, a destroy of an element it does not hold, and the deletion of a table
//! that does not exist. Each message is answered on its own, and nothing stays.

use std::time::Duration;

use nfcompile::model::{Element, Family, FieldType, Set, SetFlags, Table, Value};

use crate::apply::ApplyError;
use crate::socket::NetlinkSocket;

/// What [`probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `NFT_MSG_DESTROYSETELEM` (Linux 6.3).
    pub destroy_elements: bool,
}

/// A kernel feature the layout cannot do without, as [`ApplyError::Unsupported`] names it.
pub const INTERVAL_CONCATENATIONS: &str =
    "interval concatenations (sets of address . port . address ranges, Linux 5.6)";

const PROBE_TABLE: &str = "nfcompile-probe";
const ABSENT_TABLE: &str = "nfcompile-probe-absent";

fn probe_table() -> (Table, Set, Element) {
    let set = Set {
        name: "ranges".into(),
        key: vec![
            FieldType::Ipv4Addr,
            FieldType::InetService,
            FieldType::Ipv4Addr,
        ],
        data: None,
        flags: SetFlags::INTERVAL,
        timeout: None,
        size: None,
        comment: None,
        elements: Vec::new(),
    };
    let element = Element {
        key: vec![
            Value::Addr([192, 0, 2, 1].into()),
            Value::Port(80),
            Value::Prefix("198.51.100.0/24".parse().expect("a valid prefix")),
        ],
        data: None,
        comment: None,
    };
    let table = |name: &str, sets: Vec<Set>| Table {
        family: Family::Ipv4,
        name: name.into(),
        comment: None,
        counters: Vec::new(),
        sets,
        chains: Vec::new(),
    };
    (table(PROBE_TABLE, vec![set.clone()]), set, element)
}

/// Ask the kernel (one aborted batch, see the module documentation).
pub fn probe(socket: &NetlinkSocket) -> Result<KernelFeatures, ApplyError> {
    let (table, set, element) = probe_table();
    let absent = Table {
        name: ABSENT_TABLE.into(),
        sets: Vec::new(),
        ..table.clone()
    };
    let (encoded, set_seqs, destroy, abort) =
        crate::encode::encode_probe(&table, &set, &element, &absent);
    let answers = socket
        .transact(
            &encoded.batch,
            &encoded.acked,
            Duration::from_secs(10),
            None,
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                ApplyError::NotPermitted
            } else {
                ApplyError::Socket(e)
            }
        })?;
    let errno = |seq: u32| answers.get(&seq).and_then(|a| a.err());
    if answers.values().any(|a| *a == Err(libc::EPERM)) {
        return Err(ApplyError::NotPermitted);
    }
    if let Some(e) = set_seqs.iter().find_map(|s| errno(*s)) {
        return Err(ApplyError::Unsupported {
            feature: INTERVAL_CONCATENATIONS,
            errno: e,
        });
    }
    if errno(abort) != Some(libc::ENOENT) {
        // The batch was meant to fail on its last message; anything else is unexpected.
        return Err(ApplyError::Rejected {
            what: format!("the feature probe's deletion of table ip {ABSENT_TABLE}"),
            errno: errno(abort).unwrap_or(0),
            message: "expected ENOENT (the probe must be aborted)".into(),
        });
    }
    let destroy_elements = match errno(destroy) {
        None | Some(libc::ENOENT) => true,
        // An unknown message type in a batch.
        Some(libc::EINVAL | libc::EOPNOTSUPP) => false,
        Some(e) => {
            return Err(ApplyError::Rejected {
                what: "the feature probe's NFT_MSG_DESTROYSETELEM".into(),
                errno: e,
                message: std::io::Error::from_raw_os_error(e).to_string(),
            })
        }
    };
    Ok(KernelFeatures { destroy_elements })
}
