//! Link-layer header type numbers (LINKTYPE_*/DLT_* values) that the decapsulator knows.
//! See <https://www.tcpdump.org/linktypes.html>.

/// BSD loopback: a 4-byte address family in the capturing host's byte order.
pub const NULL: u32 = 0;
/// Ethernet II, possibly with 802.1Q / 802.1ad VLAN tags.
pub const ETHERNET: u32 = 1;
/// Raw IP as `DLT_RAW` on most BSDs and Linux before libpcap mapped it to 101.
pub const DLT_RAW_12: u32 = 12;
/// Raw IP as `DLT_RAW` on OpenBSD.
pub const DLT_RAW_14: u32 = 14;
/// Raw IPv4 or IPv6, told apart by the version nibble.
pub const RAW: u32 = 101;
/// OpenBSD loopback: like [`NULL`] but the family is in network byte order.
pub const LOOP: u32 = 108;
/// Linux cooked capture v1 (`tcpdump -i any`), 16-byte header.
pub const LINUX_SLL: u32 = 113;
/// Raw IPv4 only.
pub const IPV4: u32 = 228;
/// Raw IPv6 only.
pub const IPV6: u32 = 229;
/// Linux cooked capture v2, 20-byte header.
pub const LINUX_SLL2: u32 = 276;

/// Human name of a link type, for reports.
pub fn name(linktype: u32) -> &'static str {
    match linktype {
        NULL => "NULL",
        ETHERNET => "EN10MB",
        DLT_RAW_12 | DLT_RAW_14 | RAW => "RAW",
        LOOP => "LOOP",
        LINUX_SLL => "LINUX_SLL",
        IPV4 => "IPV4",
        IPV6 => "IPV6",
        LINUX_SLL2 => "LINUX_SLL2",
        _ => "unsupported",
    }
}

/// A link type for messages: its number and, for well-known ones, the libpcap name
/// (`147 (USER0)`).
pub fn describe(linktype: u32) -> String {
    let known = match linktype {
        NULL..=LINUX_SLL2 if is_supported(linktype) => name(linktype),
        6 => "IEEE802",
        9 => "PPP",
        50 => "PPP_HDLC",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        127 => "IEEE802_11_RADIO",
        147..=162 => {
            return format!("{linktype} (USER{})", linktype - 147);
        }
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        195 => "IEEE802_15_4",
        220 => "USB_LINUX_MMAPPED",
        249 => "NETLINK",
        _ => return linktype.to_string(),
    };
    format!("{linktype} ({known})")
}

/// The error for a capture of a link type the decapsulator cannot read.
pub fn unsupported_error(linktype: u32) -> String {
    format!(
        "unsupported link type {}: Ethernet, Linux cooked (SLL, SLL2), BSD loopback (NULL, LOOP) and raw IP are read",
        describe(linktype)
    )
}

/// Whether the decapsulator can peel this link type.
pub fn is_supported(linktype: u32) -> bool {
    matches!(
        linktype,
        NULL | ETHERNET
            | DLT_RAW_12
            | DLT_RAW_14
            | RAW
            | LOOP
            | LINUX_SLL
            | IPV4
            | IPV6
            | LINUX_SLL2
    )
}
