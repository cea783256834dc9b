//! Deleting the UDP conntrack entries of endpoints that left their frontend (ctnetlink).
//!
//! A UDP "connection" has no end: as long as the client keeps sending, conntrack keeps it
//! DNATed to the endpoint it first chose, even after that endpoint left the service. kube-proxy
//! deletes such entries after each sync (`conntrack -D -p udp --orig-dst VIP --dst-nat EP`);
//! this does the same over netlink: one dump of the family's conntrack table, filtered here,
//! then one delete per matching entry. Messages are built and parsed in Rust (plain TLVs).

use crate::wire::{
    IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_NEW, NFNL_SUBSYS_CTNETLINK,
    NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nfcompile::incremental::StaleEndpoint;

use crate::attr::{nested, put as attr};
use nfcompile::ir::Protocol;
use nfcompile::model::{Family, Value};

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;

/// One direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A conntrack entry as far as deciding and deleting needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub orig: Tuple,
    /// The reply direction: its source is the endpoint the flow was DNATed to.
    pub reply: Tuple,
    pub zone: Option<u16>,
}

/// Whether `f` was DNATed from `stale`'s frontend to its endpoint.
pub fn matches(stale: &StaleEndpoint, f: &Flow) -> bool {
    {
        let (Some(Value::Addr(ep)), Some(Value::Port(ep_port))) =
            (stale.endpoint.first(), stale.endpoint.get(1))
        else {
            return false;
        };
        if f.orig.proto != IPPROTO_UDP || f.reply.src != *ep || f.reply.sport != *ep_port {
            return false;
        }
        match stale.frontend.as_slice() {
            [Value::Addr(a), Value::Proto(Protocol::Udp), Value::Port(p)] => {
                f.orig.dst == *a && f.orig.dport == *p
            }
            // A node port: on any of the node's addresses.
            [Value::Proto(Protocol::Udp), Value::Port(p)] => f.orig.dport == *p,
            _ => false,
        }
    }
}

fn family_number(f: Family) -> u8 {
    match f {
        Family::Ipv4 => libc::AF_INET as u8,
        Family::Ipv6 => libc::AF_INET6 as u8,
    }
}

/// Delete the UDP conntrack entries that `stale` describes (from
/// `udp_flows` of [`nfcompile::incremental::Incremental::stale`]); how many. Call it
/// after the commit that removed the endpoints, so no new flow can be DNATed to them.
pub fn delete_udp_flows(stale: &[StaleEndpoint]) -> io::Result<usize> {
    let families: Vec<Family> = [Family::Ipv4, Family::Ipv6]
        .into_iter()
        .filter(|f| stale.iter().any(|s| s.family == *f))
        .collect();
    delete_flows_where(&families, |family, flow| {
        stale.iter().any(|s| s.family == family && matches(s, flow))
    })
}

/// Delete the conntrack entries of `families` for which `stale` says so: one dump per family,
/// then one delete per entry; how many were deleted.
pub fn delete_flows_where(
    families: &[Family],
    stale: impl Fn(Family, &Flow) -> bool,
) -> io::Result<usize> {
    if families.is_empty() {
        return Ok(0);
    }
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    let mut seq = 0u32;
    let mut deleted = 0;
    for &family in families {
        seq += 1;
        let flows = dump(&socket, family, seq)?;
        for flow in flows.iter().filter(|f| stale(family, f)) {
            seq += 1;
            let msg = delete_message(family, flow, seq);
            socket.send(&msg)?;
            // ENOENT: the entry timed out or was deleted meanwhile; that is what we wanted.
            match answer(&socket, seq)? {
                0 => deleted += 1,
                libc::ENOENT => {}
                libc::EPERM => return Err(not_permitted()),
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
    Ok(deleted)
}

/// Whether `flow` is UDP and must go by what `serving` says (a sweep; see
/// [`nfcompile::incremental::UdpServing::stale`]).
pub fn stale_udp(serving: &nfcompile::incremental::UdpServing, flow: &Flow) -> bool {
    flow.orig.proto == IPPROTO_UDP
        && serving.stale(
            flow.orig.dst,
            flow.orig.dport,
            flow.reply.src,
            flow.reply.sport,
        )
}

fn not_permitted() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "deleting conntrack entries needs CAP_NET_ADMIN (run as root)",
    )
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg: family, version, res_id
}

fn finish(buf: &mut [u8]) {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The delete request for `flow`, addressed by its original tuple (and zone).
pub fn delete_message(family: Family, flow: &Flow, seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(96);
    header(
        &mut buf,
        IPCTNL_MSG_CT_DELETE,
        NLM_F_ACK,
        seq,
        family_number(family),
    );
    let t = flow.orig;
    nested(&mut buf, CTA_TUPLE_ORIG, |b| {
        nested(b, CTA_TUPLE_IP, |b| {
            let (s, d) = if t.src.is_ipv4() {
                (CTA_IP_V4_SRC, CTA_IP_V4_DST)
            } else {
                (CTA_IP_V6_SRC, CTA_IP_V6_DST)
            };
            attr(b, s, &ip_bytes(&t.src));
            attr(b, d, &ip_bytes(&t.dst));
        });
        nested(b, CTA_TUPLE_PROTO, |b| {
            attr(b, CTA_PROTO_NUM, &[t.proto]);
            attr(b, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
            attr(b, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
        });
    });
    if let Some(zone) = flow.zone {
        attr(&mut buf, CTA_ZONE, &zone.to_be_bytes());
    }
    finish(&mut buf);
    buf
}

/// Attributes of a TLV run: (type without flags, payload).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        let step = len.div_ceil(4) * 4;
        if step >= b.len() {
            break;
        }
        b = &b[step..];
    }
    out
}

fn addr(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn tuple(b: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for (kind, payload) in attrs(b) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, p) in attrs(payload) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = addr(p),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = addr(p),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, p) in attrs(payload) {
                    match (k, p) {
                        (CTA_PROTO_NUM, [n, ..]) => proto = Some(*n),
                        (CTA_PROTO_SRC_PORT, [a, b, ..]) => sport = u16::from_be_bytes([*a, *b]),
                        (CTA_PROTO_DST_PORT, [a, b, ..]) => dport = u16::from_be_bytes([*a, *b]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        src: src?,
        dst: dst?,
        proto: proto?,
        sport,
        dport,
    })
}

/// One conntrack entry from a `IPCTNL_MSG_CT_NEW` message body (after the nfgenmsg).
pub fn parse_flow(body: &[u8]) -> Option<Flow> {
    let (mut orig, mut reply, mut zone) = (None, None, None);
    for (kind, payload) in attrs(body) {
        match (kind, payload) {
            (CTA_TUPLE_ORIG, p) => orig = tuple(p),
            (CTA_TUPLE_REPLY, p) => reply = tuple(p),
            (CTA_ZONE, [a, b, ..]) => zone = Some(u16::from_be_bytes([*a, *b])),
            _ => {}
        }
    }
    Some(Flow {
        orig: orig?,
        reply: reply?,
        zone,
    })
}

/// The netlink messages in `buf`: (type, sequence number, the whole message).
fn messages(buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4"));
        out.push((kind, seq, &buf[at..at + len]));
        at += len.div_ceil(4) * 4;
    }
    out
}

/// The errno an `NLMSG_ERROR` message carries (0: an ACK).
fn errno(msg: &[u8]) -> i32 {
    msg.get(16..20).map_or(libc::EPROTO, |b| {
        -i32::from_ne_bytes(b.try_into().expect("4"))
    })
}

/// Every entry of `family`'s conntrack table.
fn dump(socket: &mnl::Socket, family: Family, seq: u32) -> io::Result<Vec<Flow>> {
    let mut req = Vec::new();
    header(
        &mut req,
        IPCTNL_MSG_CT_GET,
        NLM_F_DUMP,
        seq,
        family_number(family),
    );
    finish(&mut req);
    socket.send(&req)?;
    let mut flows = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = socket.recv_raw(&mut buf)?;
        for (kind, mseq, msg) in messages(&buf[..n]) {
            if mseq != seq {
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(flows),
                NLMSG_ERROR => {
                    return match errno(msg) {
                        0 => Ok(flows),
                        libc::EPERM => Err(not_permitted()),
                        e => Err(io::Error::from_raw_os_error(e)),
                    }
                }
                k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW && msg.len() >= 20 => {
                    flows.extend(parse_flow(&msg[20..]));
                }
                _ => {}
            }
        }
    }
}

/// The errno of the ACK for `seq` (0: done).
fn answer(socket: &mnl::Socket, seq: u32) -> io::Result<i32> {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = socket.recv_raw(&mut buf)?;
        if let Some((_, _, msg)) = messages(&buf[..n])
            .into_iter()
            .find(|(kind, mseq, _)| *mseq == seq && *kind == NLMSG_ERROR)
        {
            return Ok(errno(msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        let ip = |s: &str| s.parse().unwrap();
        Flow {
            orig: Tuple {
                src: ip("192.168.10.10"),
                dst: ip("10.96.0.100"),
                proto: IPPROTO_UDP,
                sport: 40000,
                dport: 53,
            },
            reply: Tuple {
                src: ip("10.244.1.5"),
                dst: ip("192.168.10.10"),
                proto: IPPROTO_UDP,
                sport: 5353,
                dport: 40000,
            },
            zone: Some(3),
        }
    }

    /// The delete message's body parses back to the tuple it names (same TLV layout as the
    /// kernel's dump messages), and a stale pair matches exactly its flows.
    #[test]
    fn delete_messages_round_trip_and_stale_pairs_match_their_flows() {
        let f = flow();
        let msg = delete_message(Family::Ipv4, &f, 7);
        assert_eq!(
            u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize,
            msg.len()
        );
        let mut body = msg[20..].to_vec();
        // A dump message carries the reply tuple too.
        let mut reply = Vec::new();
        nested(&mut reply, CTA_TUPLE_REPLY, |b| {
            nested(b, CTA_TUPLE_IP, |b| {
                attr(b, CTA_IP_V4_SRC, &ip_bytes(&f.reply.src));
                attr(b, CTA_IP_V4_DST, &ip_bytes(&f.reply.dst));
            });
            nested(b, CTA_TUPLE_PROTO, |b| {
                attr(b, CTA_PROTO_NUM, &[IPPROTO_UDP]);
                attr(b, CTA_PROTO_SRC_PORT, &f.reply.sport.to_be_bytes());
                attr(b, CTA_PROTO_DST_PORT, &f.reply.dport.to_be_bytes());
            });
        });
        body.extend(reply);
        assert_eq!(parse_flow(&body), Some(f.clone()));

        let stale = |frontend: Vec<Value>, ep: &str, port: u16| StaleEndpoint {
            family: Family::Ipv4,
            frontend,
            endpoint: vec![Value::Addr(ep.parse().unwrap()), Value::Port(port)],
        };
        let vip = Value::Addr("10.96.0.100".parse().unwrap());
        let udp = Value::Proto(Protocol::Udp);
        assert!(matches(
            &stale(vec![vip, udp, Value::Port(53)], "10.244.1.5", 5353),
            &f
        ));
        assert!(!matches(
            &stale(vec![vip, udp, Value::Port(54)], "10.244.1.5", 5353),
            &f
        ));
        assert!(!matches(
            &stale(vec![vip, udp, Value::Port(53)], "10.244.1.6", 5353),
            &f
        ));
        let mut np = f.clone();
        np.orig.dst = "192.168.0.1".parse().unwrap();
        np.orig.dport = 30053;
        assert!(matches(
            &stale(vec![udp, Value::Port(30053)], "10.244.1.5", 5353),
            &np
        ));
        let mut tcp = f;
        tcp.orig.proto = 6;
        assert!(!matches(
            &stale(vec![vip, udp, Value::Port(53)], "10.244.1.5", 5353),
            &tcp
        ));
    }
}
