//! Owned libnftnl objects, one Rust type per kind: freed on drop, so no path (an early
//! return, a decode error) forgets a `nftnl_*_free`. [`crate::encode`] builds them into
//! batch messages, [`crate::readback`] into requests and parses replies into them.

use std::ffi::CString;

use nftnl::nftnl_sys as sys;

/// A kind of libnftnl object: how one is made, freed, written into a message and parsed
/// from one.
pub(crate) trait Object {
    fn alloc() -> *mut Self;
    /// # Safety
    /// `p` came from `alloc` and is not used afterwards.
    unsafe fn free(p: *mut Self);
    /// # Safety
    /// `hdr` heads a message with room for the payload; `p` is live.
    unsafe fn write(hdr: *mut libc::nlmsghdr, p: *mut Self);
    /// # Safety
    /// `hdr` heads a complete message; `p` is live. Negative on a malformed message.
    unsafe fn parse(hdr: *const libc::nlmsghdr, p: *mut Self) -> libc::c_int;
    /// # Safety
    /// `p` is live; `attr` is a string attribute of this kind.
    unsafe fn set_str(p: *mut Self, attr: u16, v: *const libc::c_char);
    /// # Safety
    /// `p` is live; `attr` is a 32-bit attribute of this kind.
    unsafe fn set_u32(p: *mut Self, attr: u16, v: u32);
}

/// The kinds that live in a table under a name (every kind but the table): the attributes
/// that say where. A rule is addressed by its chain's name.
pub(crate) trait InTable: Object {
    const TABLE: u32;
    const NAME: u32;
    const FAMILY: u32;
}

macro_rules! object {
    ($ty:ident: $alloc:ident, $free:ident, $write:ident, $parse:ident, $set_str:ident, $set_u32:ident) => {
        impl Object for sys::$ty {
            fn alloc() -> *mut Self {
                unsafe { sys::$alloc() }
            }
            unsafe fn free(p: *mut Self) {
                unsafe { sys::$free(p) }
            }
            unsafe fn write(hdr: *mut libc::nlmsghdr, p: *mut Self) {
                unsafe { sys::$write(hdr, p) }
            }
            unsafe fn parse(hdr: *const libc::nlmsghdr, p: *mut Self) -> libc::c_int {
                unsafe { sys::$parse(hdr, p) }
            }
            unsafe fn set_str(p: *mut Self, attr: u16, v: *const libc::c_char) {
                unsafe { sys::$set_str(p, attr, v) };
            }
            unsafe fn set_u32(p: *mut Self, attr: u16, v: u32) {
                unsafe { sys::$set_u32(p, attr, v) };
            }
        }
    };
    ($ty:ident in table: $table:ident, $name:ident, $family:ident) => {
        impl InTable for sys::$ty {
            const TABLE: u32 = sys::$table;
            const NAME: u32 = sys::$name;
            const FAMILY: u32 = sys::$family;
        }
    };
}

object!(nftnl_table: nftnl_table_alloc, nftnl_table_free,
    nftnl_table_nlmsg_build_payload, nftnl_table_nlmsg_parse,
    nftnl_table_set_str, nftnl_table_set_u32);
object!(nftnl_chain: nftnl_chain_alloc, nftnl_chain_free,
    nftnl_chain_nlmsg_build_payload, nftnl_chain_nlmsg_parse,
    nftnl_chain_set_str, nftnl_chain_set_u32);
object!(nftnl_rule: nftnl_rule_alloc, nftnl_rule_free,
    nftnl_rule_nlmsg_build_payload, nftnl_rule_nlmsg_parse,
    nftnl_rule_set_str, nftnl_rule_set_u32);
object!(nftnl_set: nftnl_set_alloc, nftnl_set_free,
    nftnl_set_nlmsg_build_payload, nftnl_set_nlmsg_parse,
    nftnl_set_set_str, nftnl_set_set_u32);
object!(nftnl_obj: nftnl_obj_alloc, nftnl_obj_free,
    nftnl_obj_nlmsg_build_payload, nftnl_obj_nlmsg_parse,
    nftnl_obj_set_str, nftnl_obj_set_u32);

object!(nftnl_chain in table: NFTNL_CHAIN_TABLE, NFTNL_CHAIN_NAME, NFTNL_CHAIN_FAMILY);
object!(nftnl_rule in table: NFTNL_RULE_TABLE, NFTNL_RULE_CHAIN, NFTNL_RULE_FAMILY);
object!(nftnl_set in table: NFTNL_SET_TABLE, NFTNL_SET_NAME, NFTNL_SET_FAMILY);
object!(nftnl_obj in table: NFTNL_OBJ_TABLE, NFTNL_OBJ_NAME, NFTNL_OBJ_FAMILY);

/// A string as libnftnl takes it. The lowering's names hold no NUL; an arbitrary model's may,
/// and there it becomes `_` (a C string cannot carry one).
pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "_")).expect("NULs removed")
}

/// One libnftnl object, freed when dropped. libnftnl copies every string and blob it is
/// given, so the `CString`s used to fill it may go first.
pub(crate) struct Owned<T: Object>(*mut T);

impl<T: Object> Owned<T> {
    pub(crate) fn new() -> Self {
        Owned(T::alloc())
    }

    /// The object as libnftnl's setters and getters take it.
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }

    /// Write the object as the payload of the message `hdr` heads.
    ///
    /// # Safety
    /// `hdr` heads a message with room for the payload.
    pub(crate) unsafe fn write(&self, hdr: *mut libc::nlmsghdr) {
        unsafe { T::write(hdr, self.0) }
    }

    /// Set the string attribute `attr` (libnftnl keeps a copy).
    ///
    /// # Safety
    /// `attr` is a string attribute of this kind.
    pub(crate) unsafe fn set_str(&self, attr: u32, v: &str) {
        let v = cstr(v);
        unsafe { T::set_str(self.0, attr as u16, v.as_ptr()) }
    }

    /// Set the 32-bit attribute `attr`.
    ///
    /// # Safety
    /// `attr` is a 32-bit attribute of this kind.
    pub(crate) unsafe fn set_u32(&self, attr: u32, v: u32) {
        unsafe { T::set_u32(self.0, attr as u16, v) }
    }

    /// The object a reply message carries; `None` when libnftnl cannot parse it.
    ///
    /// # Safety
    /// `hdr` heads a complete message of this object's kind.
    pub(crate) unsafe fn parse(hdr: *const libc::nlmsghdr) -> Option<Self> {
        let o = Self::new();
        (unsafe { T::parse(hdr, o.0) } >= 0).then_some(o)
    }
}

impl<T: InTable> Owned<T> {
    /// An object that only names its table: what a dump request of this kind asks for.
    pub(crate) fn of_table(table: &str) -> Self {
        let o = Self::new();
        unsafe { o.set_str(T::TABLE, table) };
        o
    }

    /// The object `name` of the table `table` in the family `family`.
    pub(crate) fn named(table: &str, family: u32, name: &str) -> Self {
        let o = Self::of_table(table);
        unsafe {
            o.set_str(T::NAME, name);
            o.set_u32(T::FAMILY, family);
        }
        o
    }
}

impl<T: Object> Drop for Owned<T> {
    fn drop(&mut self) {
        unsafe { T::free(self.0) }
    }
}
