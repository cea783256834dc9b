//! Counter objects and their values (for `nfcompile stats`).

use super::*;

/// One named counter of our table, as the kernel holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    pub family: Family,
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Every named counter of our tables, with its values now (`nfcompile stats`). Empty when
/// nfcompile's tables do not exist.
pub fn read_counters() -> Result<Vec<CounterValue>, ReadbackError> {
    let mut d = Dumper::open(1 << 20)?;
    let mut out = Vec::new();
    for family in Family::ALL {
        out.extend(dump_counters(&mut d, family)?);
    }
    Ok(out)
}

/// The counter objects of our table in `family` (none when the table does not exist).
pub(super) fn dump_counters(
    d: &mut Dumper,
    family: Family,
) -> Result<Vec<CounterValue>, ReadbackError> {
    let fam = crate::bytecode::nfproto(family) as u16;
    let name = nfcompile::layout::TABLE;
    let mut out = Vec::new();
    d.request(
        NFT_MSG_GETOBJ,
        fam,
        NLM_F_DUMP,
        &|hdr| unsafe {
            let o = Owned::<sys::nftnl_obj>::of_table(name);
            o.set_u32(sys::NFTNL_OBJ_TYPE, crate::bytecode::k::NFT_OBJECT_COUNTER);
            o.write(hdr);
        },
        NFT_MSG_NEWOBJ,
        &mut |h| {
            unsafe {
                let obj = parsed::<sys::nftnl_obj>(h, "counter")?;
                let o = obj.ptr();
                let is_ours = string(sys::nftnl_obj_get_str(o, sys::NFTNL_OBJ_TABLE as u16))
                    == name
                    && sys::nftnl_obj_get_u32(o, sys::NFTNL_OBJ_TYPE as u16)
                        == crate::bytecode::k::NFT_OBJECT_COUNTER;
                if is_ours {
                    out.push(CounterValue {
                        family,
                        name: string(sys::nftnl_obj_get_str(o, sys::NFTNL_OBJ_NAME as u16)),
                        packets: sys::nftnl_obj_get_u64(o, sys::NFTNL_OBJ_CTR_PKTS as u16),
                        bytes: sys::nftnl_obj_get_u64(o, sys::NFTNL_OBJ_CTR_BYTES as u16),
                    });
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}
