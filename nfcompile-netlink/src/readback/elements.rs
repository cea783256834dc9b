//! Set elements: dumped per set and decoded against the set's declaration (the counterpart of
//! `encode::elements`).

use super::*;
use crate::attr::nft::{
    DATA_VALUE as NFTA_DATA_VALUE, DATA_VERDICT as NFTA_DATA_VERDICT, LIST_ELEM as NFTA_LIST_ELEM,
    SET_ELEM_DATA as NFTA_SET_ELEM_DATA, SET_ELEM_FLAGS as NFTA_SET_ELEM_FLAGS,
    SET_ELEM_KEY as NFTA_SET_ELEM_KEY, SET_ELEM_KEY_END as NFTA_SET_ELEM_KEY_END,
    SET_ELEM_LIST_ELEMENTS as NFTA_SET_ELEM_LIST_ELEMENTS, SET_ELEM_OBJREF as NFTA_SET_ELEM_OBJREF,
    SET_ELEM_USERDATA as NFTA_SET_ELEM_USERDATA, VERDICT_CHAIN as NFTA_VERDICT_CHAIN,
    VERDICT_CODE as NFTA_VERDICT_CODE,
};

/// The elements of one set of our table, read now: for dynamic sets, whose elements packets
/// write and [`readback`] leaves out. `decl` is the set as the model declares it.
pub fn read_set_elements(family: Family, decl: &Set) -> Result<Vec<Element>, ReadbackError> {
    SetReader::open()?.elements(family, decl)
}

/// A socket kept open for repeated [`read_set_elements`]: closing an nf_tables socket right
/// after a commit waits for the kernel to release that transaction (milliseconds).
pub struct SetReader(Dumper);

impl SetReader {
    pub fn open() -> Result<SetReader, ReadbackError> {
        Ok(SetReader(Dumper::open(1 << 20)?))
    }

    /// See [`read_set_elements`].
    pub fn elements(&mut self, family: Family, decl: &Set) -> Result<Vec<Element>, ReadbackError> {
        let fam = crate::bytecode::nfproto(family) as u16;
        let specs = read_elements(&mut self.0, fam, &decl.name)?;
        decode_set_elements(decl, &specs)
    }
}

pub(super) fn decode_set_elements(
    decl: &Set,
    specs: &[ElemSpec],
) -> Result<Vec<Element>, ReadbackError> {
    let mut set_flags = 0;
    for (has, flag) in [
        (decl.is_map(), flags::NFT_SET_MAP),
        (
            decl.flags.contains(SetFlags::INTERVAL),
            flags::NFT_SET_INTERVAL,
        ),
        (
            decl.flags.contains(SetFlags::TIMEOUT),
            flags::NFT_SET_TIMEOUT,
        ),
        (decl.flags.contains(SetFlags::DYNAMIC), flags::NFT_SET_EVAL),
    ] {
        if has {
            set_flags |= flag;
        }
    }
    decode::elements(set_flags, &decl.key, decl.data.as_ref(), specs).map_err(|source| {
        ReadbackError::Decode {
            what: format!("elements of set {}", decl.name),
            source,
        }
    })
}

pub(super) fn read_elements(
    d: &mut Dumper,
    fam: u16,
    set: &str,
) -> Result<Vec<ElemSpec>, ReadbackError> {
    let mut out = Vec::new();
    dump_elements(d, fam, set, &mut |h| {
        // Parsed here rather than by libnftnl: at 400k elements its per-attribute
        // allocations dominate readback.
        let bytes = unsafe { std::slice::from_raw_parts(h.cast::<u8>(), (*h).nlmsg_len as usize) };
        parse_elements(&bytes[16 + 4..], &mut out).map_err(|source| ReadbackError::Decode {
            what: format!("elements of set {set}"),
            source,
        })
    })?;
    Ok(out)
}

/// Ask for the elements of `set`; `each` gets every answer message.
pub(super) fn dump_elements(
    d: &mut Dumper,
    fam: u16,
    set: &str,
    each: &mut dyn FnMut(*const libc::nlmsghdr) -> Result<(), ReadbackError>,
) -> Result<bool, ReadbackError> {
    let s = Owned::<sys::nftnl_set>::of_table(nfcompile::layout::TABLE);
    unsafe { s.set_str(sys::NFTNL_SET_NAME, set) };
    d.request(
        NFT_MSG_GETSETELEM,
        fam,
        NLM_F_DUMP,
        &|hdr| unsafe { sys::nftnl_set_elems_nlmsg_build_payload(hdr, s.ptr()) },
        NFT_MSG_NEWSETELEM,
        each,
    )
}

/// Netlink attributes of one level: `(type without flags, payload)`.
pub(crate) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[(len.div_ceil(4) * 4).min(b.len())..];
        Some((kind, payload))
    })
}

/// The elements of one NEWSETELEM message body (after the nfgenmsg header).
pub(super) fn parse_elements(body: &[u8], out: &mut Vec<ElemSpec>) -> Result<(), DecodeError> {
    let value = |nested: &[u8]| {
        attrs(nested)
            .find(|(t, _)| *t == NFTA_DATA_VALUE)
            .map(|(_, v)| v.to_vec())
    };
    for (t, list) in attrs(body) {
        if t != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (t, elem) in attrs(list) {
            if t != NFTA_LIST_ELEM {
                continue;
            }
            let mut spec = ElemSpec {
                key: Vec::new(),
                key_end: None,
                flags: 0,
                data: ElemData::None,
                userdata: None,
            };
            for (t, v) in attrs(elem) {
                match t {
                    NFTA_SET_ELEM_KEY => spec.key = value(v).unwrap_or_default(),
                    NFTA_SET_ELEM_KEY_END => spec.key_end = value(v),
                    NFTA_SET_ELEM_FLAGS if v.len() == 4 => {
                        spec.flags = u32::from_be_bytes([v[0], v[1], v[2], v[3]])
                    }
                    NFTA_SET_ELEM_USERDATA => spec.userdata = Some(v.to_vec()),
                    NFTA_SET_ELEM_OBJREF => {
                        spec.data = ElemData::Object(
                            String::from_utf8_lossy(v)
                                .trim_end_matches('\0')
                                .to_string(),
                        )
                    }
                    NFTA_SET_ELEM_DATA => {
                        spec.data = match attrs(v).next() {
                            Some((NFTA_DATA_VALUE, b)) => ElemData::Bytes(b.to_vec()),
                            Some((NFTA_DATA_VERDICT, verdict)) => {
                                let mut code = None;
                                let mut chain = None;
                                for (t, x) in attrs(verdict) {
                                    match t {
                                        NFTA_VERDICT_CODE if x.len() == 4 => {
                                            code =
                                                Some(i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
                                        }
                                        NFTA_VERDICT_CHAIN => {
                                            chain = Some(
                                                String::from_utf8_lossy(x)
                                                    .trim_end_matches('\0')
                                                    .to_string(),
                                            )
                                        }
                                        _ => {}
                                    }
                                }
                                ElemData::Verdict(
                                    code.ok_or_else(|| {
                                        DecodeError("verdict without a code".into())
                                    })?,
                                    chain,
                                )
                            }
                            _ => return Err(DecodeError("element data of an unknown kind".into())),
                        }
                    }
                    _ => {}
                }
            }
            out.push(spec);
        }
    }
    Ok(())
}
