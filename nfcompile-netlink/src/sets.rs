//! Sets and maps → what NEWSET and NEWSETELEM carry, in pure Rust.
//!
//! Besides types and lengths, nft keeps its own metadata in a set's userdata (key byte order,
//! and for `typeof` sets the expressions the key is made of). Writing the same TLVs makes
//! `nft list` print our sets as if nft had created them.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use nfcompile::model::{ElementData, FieldType, Set, SetData, SetFlags, Value};

use crate::bytecode::{value_bytes, verdict_insn, Insn};

pub mod flags {
    pub const NFT_SET_INTERVAL: u32 = 0x4;
    pub const NFT_SET_MAP: u32 = 0x8;
    pub const NFT_SET_TIMEOUT: u32 = 0x10;
    pub const NFT_SET_EVAL: u32 = 0x20;
    pub const NFT_SET_CONCAT: u32 = 0x80;
    pub const NFT_SET_OBJECT: u32 = 0x40;
    pub const NFT_SET_ANONYMOUS: u32 = 0x1;
    pub const NFT_SET_CONSTANT: u32 = 0x2;
    pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
    pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
}

/// Everything a NEWSET message carries for one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// `(type, len)` for maps.
    pub data: Option<(u32, u32)>,
    /// The object type of an object map (`NFT_OBJECT_COUNTER`).
    pub obj_type: Option<u32>,
    /// Field lengths, for concatenated interval sets.
    pub concat: Option<Vec<u8>>,
    pub timeout_ms: Option<u64>,
    pub size: Option<u32>,
    pub userdata: Vec<u8>,
}

/// One element as NEWSETELEM carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElemSpec {
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub flags: u32,
    pub data: ElemData,
    pub userdata: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemData {
    None,
    Bytes(Vec<u8>),
    /// `(verdict code, chain)`.
    Verdict(i32, Option<String>),
    /// The name of the object an object map's element refers to.
    Object(String),
}

/// nft's datatype ids.
fn type_id(f: FieldType) -> u32 {
    match f {
        FieldType::Slot => 4,
        FieldType::Ipv4Addr => 7,
        FieldType::Ipv6Addr => 8,
        FieldType::InetProto => 12,
        FieldType::InetService => 13,
    }
}

fn field_len(f: FieldType) -> u32 {
    match f {
        FieldType::Ipv4Addr | FieldType::Slot => 4,
        FieldType::Ipv6Addr => 16,
        FieldType::InetProto => 1,
        FieldType::InetService => 2,
    }
}

/// Length as stored: fields of a concatenation are padded to 32 bits each.
fn fields_len(fields: &[FieldType]) -> u32 {
    if fields.len() == 1 {
        field_len(fields[0])
    } else {
        fields.iter().map(|f| field_len(*f).div_ceil(4) * 4).sum()
    }
}

/// Concatenated types are the ids folded six bits at a time.
fn fields_type(fields: &[FieldType]) -> u32 {
    fields.iter().fold(0, |acc, f| (acc << 6) | type_id(*f))
}

pub fn set_spec(set: &Set) -> SetSpec {
    let mut f = 0;
    if set.flags.contains(SetFlags::INTERVAL) {
        f |= flags::NFT_SET_INTERVAL;
        if set.key.len() > 1 {
            f |= flags::NFT_SET_CONCAT;
        }
    }
    if set.flags.contains(SetFlags::TIMEOUT) {
        f |= flags::NFT_SET_TIMEOUT;
    }
    if set.flags.contains(SetFlags::DYNAMIC) {
        f |= flags::NFT_SET_EVAL;
    }
    // An object map is not a map to the kernel: no data type, its own flag and object type.
    let (data, obj_type) = match &set.data {
        None => (None, None),
        Some(SetData::Counter) => (None, Some(crate::bytecode::k::NFT_OBJECT_COUNTER)),
        Some(SetData::Verdict) => (Some((flags::NFT_DATA_VERDICT, 0)), None),
        Some(SetData::Fields(fields)) => (Some((fields_type(fields), fields_len(fields))), None),
    };
    if data.is_some() {
        f |= flags::NFT_SET_MAP;
    }
    if obj_type.is_some() {
        f |= flags::NFT_SET_OBJECT;
    }
    let concat = (set.flags.contains(SetFlags::INTERVAL) && set.key.len() > 1)
        .then(|| set.key.iter().map(|k| field_len(*k) as u8).collect());
    SetSpec {
        flags: f,
        key_type: fields_type(&set.key),
        key_len: fields_len(&set.key),
        data,
        obj_type,
        concat,
        timeout_ms: set.timeout.map(|t| u64::from(t) * 1000),
        size: set.size,
        userdata: set_userdata(set),
    }
}

/// libnftnl's userdata TLVs: one byte type, one byte length, value.
#[derive(Default)]
pub struct Udata(pub Vec<u8>);

impl Udata {
    pub fn u32(&mut self, t: u8, v: u32) -> &mut Self {
        self.bytes(t, &v.to_ne_bytes())
    }

    pub fn bytes(&mut self, t: u8, v: &[u8]) -> &mut Self {
        self.0.push(t);
        self.0.push(v.len() as u8);
        self.0.extend_from_slice(v);
        self
    }

    pub fn strz(&mut self, t: u8, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(t, &v)
    }

    pub fn nest(&mut self, t: u8, inner: Udata) -> &mut Self {
        self.bytes(t, &inner.0)
    }
}

// NFTNL_UDATA_SET_*
const UD_KEYBYTEORDER: u8 = 0;
const UD_DATABYTEORDER: u8 = 1;
const UD_KEY_TYPEOF: u8 = 3;
const UD_DATA_TYPEOF: u8 = 4;
const UD_DATA_INTERVAL: u8 = 6;
const UD_COMMENT: u8 = 7;
// nft's expression types in typeof descriptions
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG_ENDIAN: u32 = 2;

fn byteorder(fields: &[FieldType]) -> u32 {
    match fields {
        [FieldType::InetProto] | [FieldType::Slot] => BYTEORDER_HOST,
        [_] => BYTEORDER_BIG_ENDIAN,
        _ => BYTEORDER_INVALID,
    }
}

/// The expression a field stands for in a `typeof` description (what the text backend writes).
fn typeof_field(f: FieldType) -> (u32, Udata) {
    let mut u = Udata::default();
    match f {
        FieldType::Ipv4Addr => {
            u.u32(0, 12).u32(1, 12); // PROTO_DESC_IP, IPHDR_DADDR
            (EXPR_PAYLOAD, u)
        }
        FieldType::Ipv6Addr => {
            u.u32(0, 13).u32(1, 9); // PROTO_DESC_IP6, IP6HDR_DADDR
            (EXPR_PAYLOAD, u)
        }
        FieldType::InetService => {
            u.u32(0, 11).u32(1, 2); // PROTO_DESC_TH, THDR_DPORT
            (EXPR_PAYLOAD, u)
        }
        FieldType::InetProto => {
            u.u32(0, 16); // NFT_META_L4PROTO
            (EXPR_META, u)
        }
        FieldType::Slot => {
            u.u32(0, 1).u32(1, 1).u32(2, 0); // random, mod 1, offset 0
            (EXPR_NUMGEN, u)
        }
    }
}

/// A concatenation's description; nft writes an empty one for `type a . b` declarations.
fn typeof_concat(fields: &[FieldType], full: bool) -> Udata {
    let mut items = Udata::default();
    if full {
        for (i, f) in fields.iter().enumerate() {
            let (kind, data) = typeof_field(*f);
            let mut item = Udata::default();
            item.u32(0, kind).nest(1, data);
            items.nest(i as u8, item);
        }
    }
    let mut u = Udata::default();
    u.u32(0, EXPR_CONCAT).nest(1, items);
    u
}

fn set_userdata(set: &Set) -> Vec<u8> {
    let full = set.key.contains(&FieldType::Slot); // written with `typeof`
    let mut u = Udata::default();
    u.u32(UD_KEYBYTEORDER, byteorder(&set.key));
    let data_order = match &set.data {
        None | Some(SetData::Counter) => None,
        Some(SetData::Verdict) => Some(BYTEORDER_INVALID),
        Some(SetData::Fields(f)) => Some(byteorder(f)),
    };
    if let Some(order) = data_order {
        u.u32(UD_DATABYTEORDER, order);
    }
    if set.key.len() > 1 {
        u.nest(UD_KEY_TYPEOF, typeof_concat(&set.key, full));
    }
    if let Some(SetData::Fields(fields)) = &set.data {
        if fields.len() > 1 {
            u.nest(UD_DATA_TYPEOF, typeof_concat(fields, full));
        }
    }
    if data_order.is_some() {
        u.u32(UD_DATA_INTERVAL, 0);
    }
    if let Some(c) = &set.comment {
        u.0.extend(comment_udata(UD_COMMENT, c));
    }
    u.0
}

/// A comment as libnftnl userdata: one NUL-terminated TLV of type `t`, cut to what fits.
pub fn comment_udata(t: u8, text: &str) -> Vec<u8> {
    let mut u = Udata::default();
    u.strz(t, &truncate(text, 127));
    u.0
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace(['\0'], "_")
}

/// A field's bytes in a key, padded when part of a concatenation.
fn push_value(out: &mut Vec<u8>, v: &Value, concat: bool) {
    let start = out.len();
    out.extend(value_bytes(v));
    if concat {
        while (out.len() - start) % 4 != 0 {
            out.push(0);
        }
    }
}

fn last_address(p: &IpNetwork) -> IpAddr {
    p.broadcast()
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    value_bytes(&Value::Addr(a))
}

/// The next address, or `None` past the end of the family.
fn next_addr(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v) => u32::from(v).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v) => u128::from(v).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

pub const UD_ELEM_COMMENT: u8 = 0;

/// Elements of `set` as the kernel stores them.
pub fn elements(set: &Set) -> Vec<ElemSpec> {
    let concat = set.key.len() > 1;
    let interval = set.flags.contains(SetFlags::INTERVAL);
    if interval && !concat {
        return interval_elements(set);
    }
    set.elements
        .iter()
        .map(|el| {
            let mut key = Vec::with_capacity(20);
            let mut key_end = interval.then(Vec::new);
            for v in &el.key {
                match (v, key_end.as_mut()) {
                    (Value::Prefix(p), Some(end)) => {
                        push_value(&mut key, &Value::Addr(p.network()), concat);
                        push_value(end, &Value::Addr(last_address(p)), concat);
                    }
                    (v, end) => {
                        push_value(&mut key, v, concat);
                        if let Some(end) = end {
                            push_value(end, v, concat);
                        }
                    }
                }
            }
            ElemSpec {
                key,
                key_end,
                flags: 0,
                data: elem_data(&el.data),
                userdata: el
                    .comment
                    .as_ref()
                    .map(|c| comment_udata(UD_ELEM_COMMENT, c)),
            }
        })
        .collect()
}

fn elem_data(d: &Option<ElementData>) -> ElemData {
    match d {
        None => ElemData::None,
        Some(ElementData::Verdict(v)) => match verdict_insn(v) {
            Insn::Immediate { verdict, chain } => ElemData::Verdict(verdict, chain),
            _ => unreachable!("verdicts encode as immediates"),
        },
        Some(ElementData::Counter(name)) => ElemData::Object(name.clone()),
        Some(ElementData::Values(vals)) => {
            let mut out = Vec::new();
            for v in vals {
                push_value(&mut out, v, vals.len() > 1);
            }
            ElemData::Bytes(out)
        }
    }
}

/// Elements to delete: their keys (and interval ends), never the shared leading end at zero
/// of a one-field interval set, which other ranges still need.
pub fn deletion_elements(set: &Set) -> Vec<ElemSpec> {
    let zero_end = |e: &ElemSpec| {
        e.flags & flags::NFT_SET_ELEM_INTERVAL_END != 0 && e.key.iter().all(|b| *b == 0)
    };
    elements(set)
        .into_iter()
        .filter(|e| !(set.flags.contains(SetFlags::INTERVAL) && set.key.len() == 1 && zero_end(e)))
        .map(|e| ElemSpec {
            data: ElemData::None,
            userdata: None,
            ..e
        })
        .collect()
}

/// One-field interval sets as nft sends them to the rbtree backend: each range as a start
/// element and an end element (the address after it); a leading end at the zero address when
/// the first range does not start there.
pub fn interval_elements(set: &Set) -> Vec<ElemSpec> {
    let mut ranges: Vec<(IpAddr, IpAddr)> = set
        .elements
        .iter()
        .filter_map(|e| match e.key.first() {
            Some(Value::Prefix(p)) => Some((p.network(), last_address(p))),
            Some(Value::Addr(a)) => Some((*a, *a)),
            _ => None,
        })
        .collect();
    ranges.sort();
    let mut out = Vec::new();
    let plain = |key: Vec<u8>, flags: u32| ElemSpec {
        key,
        key_end: None,
        flags,
        data: ElemData::None,
        userdata: None,
    };
    if let Some((first, _)) = ranges.first() {
        let zero = match first {
            IpAddr::V4(_) => IpAddr::V4(0.into()),
            IpAddr::V6(_) => IpAddr::V6(0u128.into()),
        };
        if *first != zero {
            out.push(plain(addr_bytes(zero), flags::NFT_SET_ELEM_INTERVAL_END));
        }
    }
    for (start, end) in ranges {
        out.push(plain(addr_bytes(start), 0));
        if let Some(after) = next_addr(end) {
            out.push(plain(addr_bytes(after), flags::NFT_SET_ELEM_INTERVAL_END));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: Vec<FieldType>, data: Option<SetData>) -> Set {
        Set {
            name: "s".into(),
            key,
            data,
            flags: SetFlags::empty(),
            timeout: None,
            size: None,
            comment: None,
            elements: vec![],
        }
    }

    #[test]
    fn types_and_lengths_match_nft() {
        use FieldType::*;
        // Values seen in `nft --debug=mnl` for the same declarations.
        let ep = set_spec(&set(
            vec![Ipv4Addr, InetProto, InetService, Slot],
            Some(SetData::Fields(vec![Ipv4Addr, InetService])),
        ));
        assert_eq!(
            (ep.key_type, ep.key_len, ep.data, ep.flags),
            (0x1cc344, 16, Some((0x1cd, 8)), 0x8)
        );
        let svc = set_spec(&set(
            vec![Ipv4Addr, InetProto, InetService],
            Some(SetData::Verdict),
        ));
        assert_eq!(
            (svc.key_type, svc.key_len, svc.data),
            (0x730d, 12, Some((0xffffff00, 0)))
        );
        let ips = set_spec(&set(vec![Ipv4Addr], None));
        assert_eq!(
            (ips.key_type, ips.key_len, ips.userdata.clone()),
            (7, 4, vec![0, 4, 2, 0, 0, 0])
        );
    }

    #[test]
    fn typeof_userdata_matches_nft() {
        use FieldType::*;
        let ep = set_spec(&set(
            vec![Ipv4Addr, InetProto, InetService, Slot],
            Some(SetData::Fields(vec![Ipv4Addr, InetService])),
        ));
        // Captured from nft 1.0.6 for `typeof ip daddr . meta l4proto . th dport . numgen
        // random mod 1 : ip daddr . th dport`.
        let want = "000400000000010400000000036000040d00000001580014000407000000010c00040c0000\
                    0001040c000000010e00040900000001060004100000000214000407000000010c00040b00\
                    0000010402000000031a0004170000000112000401000000010401000000020400000000043400\
                    040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c\
                    00040b000000010402000000060400000000";
        let got: String = ep.userdata.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
        // `type a . b . c : verdict` and a dynamic `type … : a . b` map, likewise captured.
        let svc = set_spec(&set(
            vec![Ipv4Addr, InetProto, InetService],
            Some(SetData::Verdict),
        ));
        let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(&svc.userdata),
            "000400000000010400000000030800040d0000000100060400000000"
        );
        let aff = set_spec(&set(
            vec![Ipv4Addr, Ipv4Addr, InetProto, InetService],
            Some(SetData::Fields(vec![Ipv4Addr, InetService])),
        ));
        assert_eq!(
            hex(&aff.userdata),
            "000400000000010400000000030800040d0000000100040800040d0000000100060400000000"
        );
    }

    #[test]
    fn interval_sets_start_with_an_end_at_zero() {
        let mut s = set(vec![FieldType::Ipv4Addr], None);
        s.flags = SetFlags::INTERVAL;
        s.elements = vec![nfcompile::model::Element {
            key: vec![Value::Prefix("10.43.0.0/16".parse().unwrap())],
            data: None,
            comment: None,
        }];
        let e = elements(&s);
        let keys: Vec<(Vec<u8>, u32)> = e.into_iter().map(|e| (e.key, e.flags)).collect();
        assert_eq!(
            keys,
            [
                (vec![0, 0, 0, 0], 1),
                (vec![10, 43, 0, 0], 0),
                (vec![10, 44, 0, 0], 1)
            ]
        );
    }
}
