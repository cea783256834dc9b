//! Netlink attributes written in Rust: conntrack requests, and set elements, where building
//! one libnftnl object per element cost more than writing the bytes (tens of thousands of
//! allocations on a cold load).

/// nf_tables attribute numbers (`linux/netfilter/nf_tables.h`) for set elements.
pub(crate) mod nft {
    // enum nft_set_elem_list_attributes
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_LIST_SET_ID: u16 = 4;
    // enum nft_list_attributes
    pub const LIST_ELEM: u16 = 1;
    // enum nft_set_elem_attributes
    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_DATA: u16 = 2;
    pub const SET_ELEM_FLAGS: u16 = 3;
    pub const SET_ELEM_USERDATA: u16 = 6;
    pub const SET_ELEM_OBJREF: u16 = 9;
    pub const SET_ELEM_KEY_END: u16 = 10;
    // enum nft_data_attributes / nft_verdict_attributes
    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

/// An attribute with `payload`, padded to 4 bytes.
pub(crate) fn put(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

/// A NUL-terminated string attribute (a NUL inside `s` would cut it short: replaced).
pub(crate) fn put_strz(buf: &mut Vec<u8>, kind: u16, s: &str) {
    // Written in place: chain and object names go out once per element.
    buf.extend_from_slice(&((4 + s.len() + 1) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend(s.bytes().map(|c| if c == 0 { b'_' } else { c }));
    buf.push(0);
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

/// A nested attribute whose payload `inner` writes.
pub(crate) fn nested(buf: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    inner(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}
use crate::wire::NLA_F_NESTED;
