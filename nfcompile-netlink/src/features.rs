//! What the running kernel's nf_tables can do, asked once per connection.
//!
//! Supported kernels: Linux 6.1 and newer (tested: Debian 12's 6.1, the 6.12 LTS, 6.18).
//! The layout needs interval concatenations (sets of `address . port . address-range`, for
//! `loadBalancerSourceRanges`; Linux 5.6). `NFT_MSG_DESTROYSETELEM` (Linux 6.3) deletes
//! runtime state (session-affinity entries) that may expire meanwhile; without it the
//! deletion uses `NFT_MSG_DELSETELEM` and reads the map again when an entry was already gone.
//!
//! The probe is one batch the kernel aborts: a throw-away table with an interval
//! concatenation set, a destroy of an element it does not hold (and a delete of it, which must
//! say ENOENT: so an EINVAL of the destroy means an unknown message), and an exclusive declaration
//! of the same table, which the kernel always refuses (EEXIST: the batch just declared it).
//! The kernel answers each message of a batch on its own before aborting it, so one batch
//! tells every feature, and nothing stays (the ruleset's generation does not move).

use std::time::Duration;

use nfcompile::model::{Element, Family, FieldType, Set, SetFlags, Table, Value};

use crate::apply::ApplyError;
use crate::encode::ProbeSeqs;
use crate::socket::{Answers, NetlinkSocket};

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
    let (encoded, seqs) = crate::encode::encode_probe(&table, &set, &element);
    let timeout = Duration::from_secs(10);
    let answers = socket
        .transact(&encoded.batch, &encoded.acked, timeout, None)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                ApplyError::NotPermitted
            } else {
                ApplyError::Socket(e)
            }
        })?;
    judge(&answers, &seqs, encoded.acked.len(), timeout)
}

/// What the answers to the probe's messages say (see [`probe`]).
fn judge(
    answers: &Answers,
    seqs: &ProbeSeqs,
    expected: usize,
    timeout: Duration,
) -> Result<KernelFeatures, ApplyError> {
    if answers.values().any(|a| *a == Err(libc::EPERM)) {
        return Err(ApplyError::NotPermitted);
    }
    // Every message asks for an answer; a missing one means the probe proved nothing.
    let missing = expected.saturating_sub(answers.len());
    if missing > 0 {
        return Err(ApplyError::NoAnswer {
            missing,
            expected,
            timeout,
        });
    }
    // Every message went through: the kernel committed the batch.
    if answers.values().all(|a| a.is_ok()) {
        return Err(ApplyError::ProbeCommitted {
            table: PROBE_TABLE,
            detail: "every message was accepted".into(),
        });
    }
    let refused = |what: String, errno: i32, message: &str| ApplyError::Rejected {
        what,
        errno,
        message: if message.is_empty() {
            std::io::Error::from_raw_os_error(errno).to_string()
        } else {
            message.into()
        },
    };
    let errno = |seq: u32| answers.get(&seq).and_then(|a| a.err());
    if let Some(e) = seqs.table.iter().find_map(|s| errno(*s)) {
        return Err(refused(
            format!("the feature probe's table ip {PROBE_TABLE}"),
            e,
            "",
        ));
    }
    match errno(seqs.set) {
        None => {}
        // A key the kernel cannot take, or the interval flag on a concatenation.
        Some(e @ (libc::EINVAL | libc::EOPNOTSUPP)) => {
            return Err(ApplyError::Unsupported {
                feature: INTERVAL_CONCATENATIONS,
                errno: e,
            })
        }
        Some(e) => {
            return Err(refused(
                format!("the feature probe's set ip {PROBE_TABLE} ranges"),
                e,
                "",
            ))
        }
    }
    if errno(seqs.control) != Some(libc::ENOENT) {
        let e = errno(seqs.control).unwrap_or(0);
        return Err(refused(
            "the feature probe's deletion of an element its set does not hold".into(),
            e,
            "expected ENOENT",
        ));
    }
    let destroy_elements = match errno(seqs.destroy) {
        // Destroy ignores the missing element (delete would refuse it); ENOENT still means
        // the kernel knows the message.
        None | Some(libc::ENOENT) => true,
        // An unknown message type in a batch.
        Some(libc::EINVAL | libc::EOPNOTSUPP) => false,
        Some(e) => {
            return Err(refused(
                "the feature probe's NFT_MSG_DESTROYSETELEM".into(),
                e,
                "",
            ))
        }
    };
    match errno(seqs.abort) {
        Some(libc::EEXIST) => {}
        Some(e) => {
            return Err(refused(
                format!("the feature probe's exclusive declaration of table ip {PROBE_TABLE}"),
                e,
                "expected EEXIST",
            ))
        }
        None => {
            return Err(refused(
                format!("the feature probe's exclusive declaration of table ip {PROBE_TABLE}"),
                0,
                "accepted, expected EEXIST",
            ))
        }
    }
    Ok(KernelFeatures { destroy_elements })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs() -> ProbeSeqs {
        ProbeSeqs {
            table: vec![1, 2, 3],
            set: 4,
            destroy: 5,
            control: 6,
            abort: 7,
        }
    }

    /// Answers as a kernel gives them: `errors` by sequence number, 0 for the rest.
    fn answers(errors: &[(u32, i32)]) -> Answers {
        (1..=7)
            .map(|seq| {
                let e = errors.iter().find(|(s, _)| *s == seq).map(|(_, e)| *e);
                (seq, e.map_or(Ok(()), Err))
            })
            .collect()
    }

    fn judged(errors: &[(u32, i32)]) -> Result<KernelFeatures, ApplyError> {
        judge(&answers(errors), &seqs(), 7, Duration::from_secs(1))
    }

    #[test]
    fn the_answers_of_each_kernel_are_read_as_its_features() {
        // 6.3 and newer.
        let f = judged(&[(6, libc::ENOENT), (7, libc::EEXIST)]).unwrap();
        assert!(f.destroy_elements);
        // 6.1: no NFT_MSG_DESTROYSETELEM.
        let f = judged(&[(5, libc::EINVAL), (6, libc::ENOENT), (7, libc::EEXIST)]).unwrap();
        assert!(!f.destroy_elements);
    }

    #[test]
    fn a_probe_that_was_not_aborted_or_not_answered_proves_nothing() {
        let committed = judged(&[]).unwrap_err();
        assert!(
            matches!(committed, ApplyError::ProbeCommitted { .. })
                && committed
                    .to_string()
                    .contains("nft delete table ip nfcompile-probe"),
            "{committed}"
        );
        let not_refused = judged(&[(6, libc::ENOENT)]).unwrap_err();
        assert!(
            not_refused.to_string().contains("expected EEXIST"),
            "{not_refused}"
        );
        // A destroy the kernel knows but an element it cannot take: not a missing feature.
        let bad_element = judged(&[(5, libc::EINVAL), (6, libc::EINVAL), (7, libc::EEXIST)]);
        assert!(
            matches!(
                bad_element,
                Err(ApplyError::Rejected {
                    errno: libc::EINVAL,
                    ..
                })
            ),
            "{bad_element:?}"
        );
        let mut some = answers(&[(6, libc::ENOENT), (7, libc::EEXIST)]);
        some.remove(&4);
        let unanswered = judge(&some, &seqs(), 7, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(unanswered, ApplyError::NoAnswer { missing: 1, .. }),
            "{unanswered:?}"
        );
    }

    #[test]
    fn only_a_refused_set_key_means_a_missing_feature() {
        let e = judged(&[(4, libc::EOPNOTSUPP), (6, libc::ENOENT), (7, libc::EEXIST)]).unwrap_err();
        assert!(
            matches!(e, ApplyError::Unsupported { feature, .. } if feature == INTERVAL_CONCATENATIONS),
            "{e:?}"
        );
        let e = judged(&[(4, libc::ENOMEM), (6, libc::ENOENT), (7, libc::EEXIST)]).unwrap_err();
        assert!(
            matches!(&e, ApplyError::Rejected { errno: libc::ENOMEM, what, .. } if what.contains("set")),
            "{e:?}"
        );
        let e = judged(&[(1, libc::EBUSY), (6, libc::ENOENT), (7, libc::EEXIST)]).unwrap_err();
        assert!(
            matches!(&e, ApplyError::Rejected { what, .. } if what.contains("table")),
            "{e:?}"
        );
        let e = judged(&[(2, libc::EPERM), (6, libc::ENOENT), (7, libc::EEXIST)]).unwrap_err();
        assert!(matches!(e, ApplyError::NotPermitted), "{e:?}");
    }
}
