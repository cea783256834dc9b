//! Owned libnftnl objects, one Rust type per kind: freed on drop, so no path (an early
//! return, a decode error) forgets a `nftnl_*_free`. [`crate::encode`] builds them into
//! batch messages, [`crate::readback`] into requests and parses replies into them.

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
}

macro_rules! object {
    ($ty:ident: $alloc:ident, $free:ident, $write:ident, $parse:ident) => {
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
        }
    };
}

object!(nftnl_table: nftnl_table_alloc, nftnl_table_free,
    nftnl_table_nlmsg_build_payload, nftnl_table_nlmsg_parse);
object!(nftnl_chain: nftnl_chain_alloc, nftnl_chain_free,
    nftnl_chain_nlmsg_build_payload, nftnl_chain_nlmsg_parse);
object!(nftnl_rule: nftnl_rule_alloc, nftnl_rule_free,
    nftnl_rule_nlmsg_build_payload, nftnl_rule_nlmsg_parse);
object!(nftnl_set: nftnl_set_alloc, nftnl_set_free,
    nftnl_set_nlmsg_build_payload, nftnl_set_nlmsg_parse);
object!(nftnl_obj: nftnl_obj_alloc, nftnl_obj_free,
    nftnl_obj_nlmsg_build_payload, nftnl_obj_nlmsg_parse);

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

    /// The object a reply message carries; `None` when libnftnl cannot parse it.
    ///
    /// # Safety
    /// `hdr` heads a complete message of this object's kind.
    pub(crate) unsafe fn parse(hdr: *const libc::nlmsghdr) -> Option<Self> {
        let o = Self::new();
        (unsafe { T::parse(hdr, o.0) } >= 0).then_some(o)
    }
}

impl<T: Object> Drop for Owned<T> {
    fn drop(&mut self) {
        unsafe { T::free(self.0) }
    }
}
