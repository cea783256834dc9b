//! Sending a batch and collecting its answers.
//!
//! All pages of a batch go out in one `sendmsg`: the kernel treats every send as a batch of
//! its own, so `mnl::Socket::send_all` (one send per page) would split the transaction. Every
//! message asks for an ACK; when one fails the kernel aborts the batch and the batch-end
//! message gets no answer, so collection stops on a timeout rather than waiting for "all".

use crate::wire::{NLMSG_ERROR, NLMSG_HDRLEN};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use nftnl::FinalizedBatch;

/// Per sequence number: `Ok(())` for an ACK, `Err(errno)` for an error.
pub type Answers = BTreeMap<u32, Result<(), i32>>;

pub struct NetlinkSocket {
    socket: mnl::Socket,
}

impl NetlinkSocket {
    pub fn open() -> io::Result<Self> {
        let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
        Ok(NetlinkSocket { socket })
    }

    /// Discard answers left from an earlier batch (one that timed out, or the unanswered
    /// batch end of a refused one), so a reused socket never reads them as this batch's.
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                return;
            }
        }
    }

    fn setsockopt(&self, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
        let r = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Send the whole batch in one `sendmsg`, then collect answers until every sequence number
    /// in `expected` has one (or shortly after the first error, or at `timeout`).
    pub fn transact(
        &self,
        batch: &FinalizedBatch,
        expected: &BTreeSet<u32>,
        timeout: Duration,
        generation: Option<u32>,
    ) -> io::Result<Answers> {
        self.drain();
        let mut pages: Vec<&[u8]> = batch.iter().collect();
        // nftnl writes the batch-begin message itself; to make the kernel refuse the batch
        // when the ruleset changed since `generation`, send our own begin carrying
        // NFNL_BATCH_GENID in its place.
        let begin;
        if let (Some(gen), Some(first)) = (generation, pages.first().copied()) {
            let len = u32::from_ne_bytes(first[0..4].try_into().expect("header")) as usize;
            let mut b = first[..len].to_vec();
            b.extend_from_slice(&8u16.to_ne_bytes()); // nla_len
            b.extend_from_slice(&1u16.to_ne_bytes()); // NFNL_BATCH_GENID
            b.extend_from_slice(&gen.to_be_bytes());
            let new_len = b.len() as u32;
            b[0..4].copy_from_slice(&new_len.to_ne_bytes());
            begin = b;
            pages[0] = &first[len.div_ceil(4) * 4..];
            pages.insert(0, &begin);
        }
        let total: usize = pages.iter().map(|p| p.len()).sum();
        let size = (total + (1 << 20)).min(i32::MAX as usize) as libc::c_int;
        // As root the *FORCE variants lift the system limits; otherwise take what we get.
        if self.setsockopt(libc::SO_SNDBUFFORCE, size).is_err() {
            let _ = self.setsockopt(libc::SO_SNDBUF, size);
        }
        let rcv = (expected.len() * 64 + (4 << 20)).min(i32::MAX as usize) as libc::c_int;
        if self.setsockopt(libc::SO_RCVBUFFORCE, rcv).is_err() {
            let _ = self.setsockopt(libc::SO_RCVBUF, rcv);
        }
        let mut iov: Vec<libc::iovec> = pages
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        let sent = unsafe { libc::sendmsg(self.socket.as_raw_fd(), &msg, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != total {
            return Err(io::Error::other(format!(
                "sent {sent} of {total} batch bytes"
            )));
        }
        self.collect(expected, timeout)
    }

    fn collect(&self, expected: &BTreeSet<u32>, timeout: Duration) -> io::Result<Answers> {
        let mut answers = Answers::new();
        let mut buf = vec![0u8; 1 << 20];
        let deadline = Instant::now() + timeout;
        let settle = Duration::from_millis(200);
        let mut first_error: Option<Instant> = None;
        let mut pending = expected.len();
        while pending > 0 {
            let now = Instant::now();
            let limit = match first_error {
                Some(t) => (t + settle).min(deadline),
                None => deadline,
            };
            if now >= limit {
                break;
            }
            let wait = (limit - now).as_millis().min(i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ready = unsafe { libc::poll(&mut pfd, 1, wait.max(1)) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if ready == 0 {
                continue;
            }
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for seq in parse_answers(&buf[..n as usize], &mut answers) {
                if expected.contains(&seq) {
                    pending -= 1;
                }
            }
            if first_error.is_none() && answers.values().any(|a| a.is_err()) {
                first_error = Some(Instant::now());
            }
        }
        Ok(answers)
    }
}

/// Netlink ACK/error messages in `buf`, by sequence number; returns the sequence numbers
/// answered for the first time.
pub fn parse_answers(mut buf: &[u8], answers: &mut Answers) -> Vec<u32> {
    let mut new = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            let errno = i32::from_ne_bytes(buf[16..20].try_into().expect("4 bytes"));
            if answers
                .insert(seq, if errno == 0 { Ok(()) } else { Err(-errno) })
                .is_none()
            {
                new.push(seq);
            }
        }
        buf = &buf[(len.div_ceil(4) * 4).min(buf.len())..];
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_errors_are_read_by_sequence_number() {
        let mut buf = Vec::new();
        for (seq, err) in [(7u32, 0i32), (8, -22)] {
            buf.extend(36u32.to_ne_bytes());
            buf.extend(NLMSG_ERROR.to_ne_bytes());
            buf.extend(0u16.to_ne_bytes());
            buf.extend(seq.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend(err.to_ne_bytes());
            buf.extend([0u8; 16]);
        }
        let mut a = Answers::new();
        parse_answers(&buf, &mut a);
        assert_eq!(a[&7], Ok(()));
        assert_eq!(a[&8], Err(22));
    }
}
