//! Netlink message numbers, each declared once: the netlink header (linux/netlink.h), the
//! nfnetlink subsystems (linux/netfilter/nfnetlink.h), nf_tables message types
//! (linux/netfilter/nf_tables.h) and ctnetlink's (linux/netfilter/nfnetlink_conntrack.h).
//! Attribute numbers stay with the code that encodes and decodes them (`bytecode::k`,
//! `sets`, `conntrack`).

// Header flags.
/// A request.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Ask for an acknowledgement (an NLMSG_ERROR with errno 0).
pub const NLM_F_ACK: u16 = 0x4;
/// Do not replace what exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create what does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// Add at the end of a list (rules of a chain).
pub const NLM_F_APPEND: u16 = 0x800;
/// A dump (NLM_F_ROOT | NLM_F_MATCH).
pub const NLM_F_DUMP: u16 = 0x300;

// Message types of netlink itself.
/// An error or, with errno 0, an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// The end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// Bytes of the netlink message header.
pub const NLMSG_HDRLEN: usize = 16;

// Attributes.
/// The attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type without its flags.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

// nfnetlink subsystems (the high byte of a message type).
/// Connection tracking.
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// nf_tables.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;

// nf_tables message types.
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_DELSET: u16 = 11;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFT_MSG_NEWGEN: u16 = 15;
pub const NFT_MSG_GETGEN: u16 = 16;
pub const NFT_MSG_NEWOBJ: u16 = 18;
pub const NFT_MSG_GETOBJ: u16 = 19;
pub const NFT_MSG_DELOBJ: u16 = 20;
/// Delete set elements, an element already gone being no error (Linux 6.3).
pub const NFT_MSG_DESTROYSETELEM: u16 = 30;

// ctnetlink message types.
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
pub const IPCTNL_MSG_CT_GET: u16 = 1;
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;
