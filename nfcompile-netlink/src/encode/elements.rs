//! Set elements: their attribute bytes, written here rather than by libnftnl (a libnftnl object
//! per element costs more than the kernel's insertion of it), split into messages under 64 KiB.

use super::*;

impl Encoder {
    pub(super) fn set_elements(&mut self, table: &Table, set: &Set, name: &str, id: u32) {
        let specs = sets::elements(set);
        self.element_message(
            table,
            set,
            name,
            Some(id),
            specs,
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
        );
    }

    /// One NEWSETELEM/DELSETELEM exchange (split in as many messages as needed).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn element_message(
        &mut self,
        table: &Table,
        set: &Set,
        name: &str,
        id: Option<u32>,
        specs: Vec<ElemSpec>,
        kind: u16,
        flags: u16,
    ) {
        if specs.is_empty() {
            return;
        }
        self.elements += specs.len();
        let mut what = element_provenance(table, set);
        if kind == NFT_MSG_DELSETELEM || kind == NFT_MSG_DESTROYSETELEM {
            what = format!("deletion of {what}");
        }
        for body in element_bodies(&table.name, name, id, &specs) {
            self.add(
                kind,
                family_code(table.family),
                flags,
                what.clone(),
                Box::new(move |hdr| {
                    // The batch leaves room for a message of 64 KiB + a page after `hdr`;
                    // element_bodies keeps each body under 60 KiB.
                    unsafe {
                        let len = (*hdr).nlmsg_len as usize;
                        let at = hdr.cast::<u8>().add(len);
                        std::ptr::copy_nonoverlapping(body.as_ptr(), at, body.len());
                        (*hdr).nlmsg_len = (len + body.len()) as u32;
                    }
                    false
                }),
            );
        }
    }
}

/// What an element message carries, for errors: the set and the services its comments name.
pub(super) fn element_provenance(table: &Table, set: &Set) -> String {
    let mut named: Vec<&str> = set
        .elements
        .iter()
        .filter_map(|e| e.comment.as_deref())
        .take(3)
        .collect();
    named.dedup();
    let mut s = format!(
        "elements of set {} ({} {})",
        set.name,
        family_name(table.family),
        table.name
    );
    if !named.is_empty() {
        s.push_str(&format!(", e.g. {}", named.join(", ")));
    }
    s
}

/// Bodies of NEWSETELEM/DELSETELEM messages (after the nfgenmsg header) carrying `specs`,
/// as libnftnl would write them: the set by name (and batch id), then the elements, split so
/// that the element list stays within a netlink attribute's 64 KiB.
pub(super) fn element_bodies(
    table: &str,
    set: &str,
    id: Option<u32>,
    specs: &[ElemSpec],
) -> Vec<Vec<u8>> {
    use crate::attr::{nested, nft, put, put_strz};
    const MAX_LIST: usize = 60 * 1024;
    let head = |b: &mut Vec<u8>| {
        put_strz(b, nft::SET_ELEM_LIST_SET, set);
        if let Some(id) = id {
            put(b, nft::SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
        }
        put_strz(b, nft::SET_ELEM_LIST_TABLE, table);
    };
    let element = |b: &mut Vec<u8>, e: &ElemSpec| {
        nested(b, nft::LIST_ELEM, |b| {
            if e.flags != 0 {
                put(b, nft::SET_ELEM_FLAGS, &e.flags.to_be_bytes());
            }
            nested(b, nft::SET_ELEM_KEY, |b| put(b, nft::DATA_VALUE, &e.key));
            if let Some(end) = &e.key_end {
                nested(b, nft::SET_ELEM_KEY_END, |b| put(b, nft::DATA_VALUE, end));
            }
            match &e.data {
                ElemData::None => {}
                ElemData::Bytes(v) => {
                    nested(b, nft::SET_ELEM_DATA, |b| put(b, nft::DATA_VALUE, v));
                }
                ElemData::Verdict(code, chain) => nested(b, nft::SET_ELEM_DATA, |b| {
                    nested(b, nft::DATA_VERDICT, |b| {
                        put(b, nft::VERDICT_CODE, &code.to_be_bytes());
                        if let Some(c) = chain {
                            put_strz(b, nft::VERDICT_CHAIN, c);
                        }
                    })
                }),
                ElemData::Object(name) => put_strz(b, nft::SET_ELEM_OBJREF, name),
            }
            if let Some(u) = &e.userdata {
                put(b, nft::SET_ELEM_USERDATA, u);
            }
        })
    };
    let mut bodies = Vec::new();
    let mut rest = specs;
    while !rest.is_empty() {
        let mut body = Vec::with_capacity(MAX_LIST + 1024);
        head(&mut body);
        let list_start = body.len();
        let mut taken = 0;
        nested(&mut body, nft::SET_ELEM_LIST_ELEMENTS, |b| {
            for e in rest {
                // Written in place; an element that does not fit is taken back and opens
                // the next message.
                let before = b.len();
                element(b, e);
                if taken > 0 && b.len() - list_start > MAX_LIST {
                    b.truncate(before);
                    break;
                }
                taken += 1;
            }
        });
        rest = &rest[taken..];
        bodies.push(body);
    }
    bodies
}

/// libnftnl's element object: the reference [`element_bodies`] is tested against.
#[cfg(test)]
pub(super) fn new_elem(e: &ElemSpec) -> *mut sys::nftnl_set_elem {
    let el = unsafe { sys::nftnl_set_elem_alloc() };
    unsafe {
        sys::nftnl_set_elem_set(
            el,
            sys::NFTNL_SET_ELEM_KEY as u16,
            e.key.as_ptr().cast(),
            e.key.len() as u32,
        );
        if let Some(end) = &e.key_end {
            sys::nftnl_set_elem_set(
                el,
                sys::NFTNL_SET_ELEM_KEY_END as u16,
                end.as_ptr().cast(),
                end.len() as u32,
            );
        }
        if e.flags != 0 {
            sys::nftnl_set_elem_set_u32(el, sys::NFTNL_SET_ELEM_FLAGS as u16, e.flags);
        }
        match &e.data {
            ElemData::None => {}
            ElemData::Bytes(b) => {
                sys::nftnl_set_elem_set(
                    el,
                    sys::NFTNL_SET_ELEM_DATA as u16,
                    b.as_ptr().cast(),
                    b.len() as u32,
                );
            }
            ElemData::Object(name) => {
                let n = cstr(name);
                sys::nftnl_set_elem_set_str(el, sys::NFTNL_SET_ELEM_OBJREF as u16, n.as_ptr());
            }
            ElemData::Verdict(v, chain) => {
                sys::nftnl_set_elem_set_u32(el, sys::NFTNL_SET_ELEM_VERDICT as u16, *v as u32);
                if let Some(c) = chain {
                    let c = cstr(c);
                    sys::nftnl_set_elem_set_str(el, sys::NFTNL_SET_ELEM_CHAIN as u16, c.as_ptr());
                }
            }
        }
        if let Some(u) = &e.userdata {
            sys::nftnl_set_elem_set(
                el,
                sys::NFTNL_SET_ELEM_USERDATA as u16,
                u.as_ptr().cast(),
                u.len() as u32,
            );
        }
    }
    el
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::nft;
    use crate::readback::attrs;

    /// Attributes as (type, payload).
    type Attrs = Vec<(u16, Vec<u8>)>;

    /// The set attributes and each element's attribute bytes of message bodies.
    fn split(bodies: &[Vec<u8>]) -> (Attrs, Vec<Vec<u8>>) {
        let mut head = Vec::new();
        let mut elements = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            for (t, v) in attrs(body) {
                if t & 0x3fff == nft::SET_ELEM_LIST_ELEMENTS {
                    elements.extend(attrs(v).map(|(_, e)| e.to_vec()));
                } else if i == 0 {
                    head.push((t, v.to_vec()));
                }
            }
        }
        head.sort();
        (head, elements)
    }

    /// What libnftnl writes for the same elements (its element nests are numbered, ours
    /// are NFTA_LIST_ELEM; the kernel reads neither number).
    fn libnftnl_bodies(table: &Table, set: &Set, id: u32, specs: &[ElemSpec]) -> Vec<Vec<u8>> {
        let s = set_object(table, &set.name, id);
        for e in specs {
            unsafe { sys::nftnl_set_elem_add(s.ptr(), new_elem(e)) };
        }
        let iter = unsafe { sys::nftnl_set_elems_iter_create(s.ptr()) };
        let mut bodies = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let hdr = unsafe {
                sys::nftnl_nlmsg_build_hdr(
                    buf.as_mut_ptr().cast(),
                    NFT_MSG_NEWSETELEM,
                    family_code(table.family),
                    0,
                    1,
                )
            };
            let more = unsafe { sys::nftnl_set_elems_nlmsg_build_payload_iter(hdr, iter) } > 0;
            let len = unsafe { (*hdr).nlmsg_len } as usize;
            bodies.push(buf[20..len].to_vec()); // after nlmsghdr (16) and nfgenmsg (4)
            if !more {
                break;
            }
        }
        unsafe { sys::nftnl_set_elems_iter_destroy(iter) };
        bodies
    }

    #[test]
    fn element_messages_carry_what_libnftnl_would_write() {
        let mut compared = 0;
        for seed in 0..12 {
            let mut cluster = nfcompile::synth::random(seed, 40);
            cluster.config.counters = seed % 2 == 0;
            let ruleset = nfcompile::compile(&cluster).unwrap();
            for table in &ruleset.tables {
                for set in &table.sets {
                    let specs = sets::elements(set);
                    if specs.is_empty() {
                        continue;
                    }
                    let ours = element_bodies(&table.name, &set.name, Some(7), &specs);
                    let theirs = libnftnl_bodies(table, set, 7, &specs);
                    assert_eq!(split(&ours), split(&theirs), "set {}", set.name);
                    compared += specs.len();
                }
            }
        }
        assert!(compared > 5_000, "only {compared} elements compared");
    }

    #[test]
    fn long_element_lists_are_split_under_64_kib() {
        let cluster = nfcompile::synth::cluster(nfcompile::synth::Shape {
            services: 2_000,
            endpoints: 5,
            nodes: 10,
        });
        let ruleset = nfcompile::compile(&cluster).unwrap();
        let set = ruleset.tables[0].set("endpoints").unwrap();
        let specs = sets::elements(set);
        let bodies = element_bodies("t", &set.name, None, &specs);
        assert!(bodies.len() > 1, "{} elements in one message", specs.len());
        assert!(bodies.iter().all(|b| b.len() < 62 * 1024));
        let (_, elements) = split(&bodies);
        assert_eq!(elements.len(), specs.len());
    }
}
