//! IP addresses and CIDR ranges: the address blocklist, and classifying the hosts that
//! server-side request forgery aims at.
//!
//! Addresses are compared as 128-bit numbers: IPv4 as its IPv4-mapped IPv6 form
//! (`::ffff:a.b.c.d`), so `203.0.113.7` and `::ffff:203.0.113.7` are the same client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address as a 128-bit number, IPv4 mapped into `::ffff:0:0/96`.
pub type Address = u128;

/// The 96-bit prefix of IPv4-mapped IPv6 addresses.
const V4_MAPPED: u128 = 0xffff_u128 << 32;

fn from_v4(v4: Ipv4Addr) -> Address {
    V4_MAPPED | u128::from(u32::from(v4))
}

/// The IPv4 address inside an IPv4-mapped address.
fn as_v4(address: Address) -> Option<u32> {
    (address >> 32 == 0xffff).then_some((address & 0xffff_ffff) as u32)
}

/// Parses an address as the gateway gives it: `203.0.113.7`, `2001:db8::1`, possibly in
/// brackets or with a zone (`fe80::1%eth0`, the zone ignored).
pub fn parse_address(text: &str) -> Option<Address> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(text);
    let text = text.split('%').next().unwrap_or_default();
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(from_v4(v4)),
        IpAddr::V6(v6) => Some(u128::from(v6)),
    }
}

/// A range of addresses: `203.0.113.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: Address,
    /// Prefix length over the 128-bit form (an IPv4 /24 is a /120).
    prefix: u8,
}

impl Cidr {
    /// Parses `address[/prefix]`. A bare address is a single host. Host bits set below the
    /// prefix (`203.0.113.9/24`) are an error: such an entry is most likely a typo, and
    /// guessing which range was meant could block the wrong clients.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let is_v4 = address.parse::<Ipv4Addr>().is_ok();
        let network = match (address.parse::<Ipv4Addr>(), address.parse::<Ipv6Addr>()) {
            (Ok(v4), _) => from_v4(v4),
            (_, Ok(v6)) => u128::from(v6),
            _ => return Err(format!("`{text}` is not an IPv4 or IPv6 address or range")),
        };
        let width: u8 = if is_v4 { 32 } else { 128 };
        let bits = match prefix {
            None => width,
            Some(digits) => match digits.parse::<u8>() {
                Ok(bits) if bits <= width && !digits.starts_with('+') => bits,
                _ => {
                    return Err(format!(
                        "`{text}` has an invalid prefix length (0 to {width} for IPv{})",
                        if is_v4 { 4 } else { 6 }
                    ))
                }
            },
        };
        let prefix = bits + (128 - width);
        let cidr = Cidr {
            network: network & mask(prefix),
            prefix,
        };
        if cidr.network != network {
            return Err(format!(
                "`{text}` has host bits set below the prefix; write the network address"
            ));
        }
        Ok(cidr)
    }

    /// Whether `address` is in the range.
    pub fn contains(&self, address: Address) -> bool {
        address & mask(self.prefix) == self.network
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        bits => u128::MAX << (128 - u32::from(bits.min(128))),
    }
}

/// Parses an IPv4 address the lenient way `inet_aton` does, as many HTTP clients resolve
/// hosts: one to four parts, each decimal, octal (leading `0`) or hex (`0x`), the last
/// part filling the remaining bytes. `127.1`, `2130706433`, `0x7f000001` and
/// `0177.0.0.1` are all `127.0.0.1`. Attackers use these forms to hide internal
/// addresses from naive filters.
pub fn parse_ipv4_lenient(text: &str) -> Option<u32> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    let mut address: u64 = 0;
    for (index, &value) in leading.iter().enumerate() {
        if value > 0xff {
            return None;
        }
        address |= value << (24 - 8 * index);
    }
    let remaining_bits = 32 - 8 * leading.len() as u32;
    if *last >= 1u64 << remaining_bits {
        return None;
    }
    u32::try_from(address | last).ok()
}

/// What kind of network an address or host name points into, for SSRF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostClass {
    /// Anything else (the public internet, or unknown).
    Public,
    /// Private ranges (RFC 1918, CGNAT, IPv6 unique local) and internal DNS names.
    Private,
    /// Link-local (`169.254.0.0/16`, `fe80::/10`).
    LinkLocal,
    /// The machine itself (`127.0.0.0/8`, `::1`, `0.0.0.0`, `localhost`).
    Loopback,
    /// A cloud metadata service (`169.254.169.254` and its names): credentials live there.
    Metadata,
}

/// Classifies an address.
pub fn classify_address(address: Address) -> HostClass {
    if let Some(v4) = as_v4(address) {
        return classify_v4(v4);
    }
    let v6 = Ipv6Addr::from(address);
    let first = v6.segments()[0];
    if address == 0 || address == 1 {
        HostClass::Loopback
    } else if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
        // AWS's IPv6 metadata endpoint.
        HostClass::Metadata
    } else if first & 0xffc0 == 0xfe80 {
        HostClass::LinkLocal
    } else if first & 0xfe00 == 0xfc00 {
        HostClass::Private
    } else {
        HostClass::Public
    }
}

fn classify_v4(v4: u32) -> HostClass {
    let in_range = |network: u32, bits: u32| v4 >> (32 - bits) == network >> (32 - bits);
    if v4 == 0xa9fe_a9fe || v4 == 0x6464_64c8 {
        // 169.254.169.254 (AWS, GCP, Azure, OpenStack) and 100.100.100.200 (Alibaba).
        HostClass::Metadata
    } else if in_range(0x7f00_0000, 8) || in_range(0, 8) {
        HostClass::Loopback
    } else if in_range(0xa9fe_0000, 16) {
        HostClass::LinkLocal
    } else if in_range(0x0a00_0000, 8)
        || in_range(0xac10_0000, 12)
        || in_range(0xc0a8_0000, 16)
        || in_range(0x6440_0000, 10)
    {
        HostClass::Private
    } else {
        HostClass::Public
    }
}

/// DNS names that resolve into internal networks wherever they are looked up.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];
/// Public names that resolve to `127.0.0.1`.
const LOOPBACK_ALIASES: &[&str] = &["localtest.me", "lvh.me", "vcap.me"];
/// Suffixes of names that only resolve inside a private network.
const INTERNAL_SUFFIXES: &[&str] = &[".internal", ".local", ".localdomain", ".intranet", ".corp"];
/// Wildcard DNS services that resolve `a.b.c.d.<service>` to `a.b.c.d`.
const WILDCARD_DNS: &[&str] = &[".nip.io", ".sslip.io", ".xip.io"];

/// Classifies a host as it appears in a URL or parameter (lowercase): a name, an IPv4 in
/// any `inet_aton` form, or an IPv6 in brackets.
pub fn classify_host(host: &str) -> HostClass {
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return HostClass::Public;
    }
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .and_then(parse_address)
            .map_or(HostClass::Public, classify_address);
    }
    if let Some(v4) = parse_ipv4_lenient(host) {
        return classify_v4(v4);
    }
    if let Some(address) = parse_address(host) {
        return classify_address(address);
    }
    if METADATA_NAMES.contains(&host) {
        return HostClass::Metadata;
    }
    if host == "localhost"
        || host.ends_with(".localhost")
        || LOOPBACK_ALIASES
            .iter()
            .any(|alias| host == *alias || host.ends_with(&format!(".{alias}")))
    {
        return HostClass::Loopback;
    }
    for suffix in WILDCARD_DNS {
        if let Some(embedded) = host.strip_suffix(suffix) {
            // `10.0.0.1.nip.io` or `app.10.0.0.1.nip.io`: the last four labels are the IP.
            let labels: Vec<&str> = embedded.rsplit('.').take(4).collect();
            let ip: Vec<&str> = labels.into_iter().rev().collect();
            if let Ok(v4) = ip.join(".").parse::<Ipv4Addr>() {
                return classify_v4(u32::from(v4));
            }
        }
    }
    if INTERNAL_SUFFIXES
        .iter()
        .any(|suffix| host.ends_with(suffix))
    {
        return HostClass::Private;
    }
    HostClass::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        parse_address(text).unwrap()
    }

    #[test]
    fn addresses_parse_in_every_form_the_gateway_gives() {
        assert_eq!(addr("203.0.113.7"), addr("::ffff:203.0.113.7"));
        assert_eq!(addr("[2001:db8::1]"), addr("2001:db8::1"));
        assert_eq!(addr("fe80::1%eth0"), addr("fe80::1"));
        assert_eq!(addr(" 192.0.2.1 "), addr("192.0.2.1"));
        assert_eq!(parse_address("203.0.113.7:443"), None);
        assert_eq!(parse_address("not-an-ip"), None);
        assert_eq!(parse_address(""), None);
    }

    #[test]
    fn ipv4_ranges() {
        let range = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(range.contains(addr("203.0.113.0")));
        assert!(range.contains(addr("203.0.113.255")));
        assert!(range.contains(addr("::ffff:203.0.113.9")));
        assert!(!range.contains(addr("203.0.114.0")));
        assert!(!range.contains(addr("2001:db8::1")));
        let host = Cidr::parse("198.51.100.7").unwrap();
        assert!(host.contains(addr("198.51.100.7")));
        assert!(!host.contains(addr("198.51.100.8")));
        let odd = Cidr::parse("10.0.0.0/9").unwrap();
        assert!(odd.contains(addr("10.127.255.255")));
        assert!(!odd.contains(addr("10.128.0.0")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(addr("8.8.8.8")));
        // An IPv4 /0 still only covers IPv4.
        assert!(!all.contains(addr("2001:db8::1")));
    }

    #[test]
    fn ipv6_ranges() {
        let range = Cidr::parse("2001:db8:bad::/48").unwrap();
        assert!(range.contains(addr("2001:db8:bad::1")));
        assert!(range.contains(addr("2001:db8:bad:ffff:ffff:ffff:ffff:ffff")));
        assert!(!range.contains(addr("2001:db8:bae::")));
        assert!(!range.contains(addr("203.0.113.7")));
        let single = Cidr::parse("2001:db8::1").unwrap();
        assert!(single.contains(addr("2001:db8::1")));
        assert!(!single.contains(addr("2001:db8::2")));
        let all = Cidr::parse("::/0").unwrap();
        assert!(all.contains(addr("2001:db8::1")));
        assert!(all.contains(addr("203.0.113.7")));
    }

    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        for bad in [
            "203.0.113.0/33",
            "2001:db8::/129",
            "203.0.113.0/",
            "203.0.113.0/+8",
            "203.0.113.0/-1",
            "203.0.113/24",
            "example.org",
            "",
            "203.0.113.9/24",
            "2001:db8::1/64",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(Cidr::parse("203.0.113.9/24")
            .unwrap_err()
            .contains("host bits"));
    }

    #[test]
    fn lenient_ipv4_forms() {
        let loopback = 0x7f00_0001;
        for form in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f000001",
            "0x7f.1",
            "0177.0.0.1",
            "0177.00.00.01",
        ] {
            assert_eq!(parse_ipv4_lenient(form), Some(loopback), "{form}");
        }
        assert_eq!(parse_ipv4_lenient("0"), Some(0));
        for bad in [
            "256.0.0.1",
            "1.2.3.4.5",
            "4294967296",
            "08.0.0.1",
            "a.b",
            "",
            "1..2",
        ] {
            assert_eq!(parse_ipv4_lenient(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_classes() {
        use HostClass::*;
        let cases = [
            ("169.254.169.254", Metadata),
            ("metadata.google.internal", Metadata),
            ("100.100.100.200", Metadata),
            ("[fd00:ec2::254]", Metadata),
            ("localhost", Loopback),
            ("api.localhost", Loopback),
            ("127.0.0.1", Loopback),
            ("2130706433", Loopback),
            ("0.0.0.0", Loopback),
            ("[::1]", Loopback),
            ("[::ffff:127.0.0.1]", Loopback),
            ("lvh.me", Loopback),
            ("127.0.0.1.nip.io", Loopback),
            ("169.254.10.1", LinkLocal),
            ("[fe80::1]", LinkLocal),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("[fd12::1]", Private),
            ("db.internal", Private),
            ("app.10.0.0.5.sslip.io", Private),
            ("172.32.0.1", Public),
            ("ws.agetic.gob.bo", Public),
            ("8.8.8.8", Public),
            ("[2001:db8::1]", Public),
            ("", Public),
        ];
        for (host, class) in cases {
            assert_eq!(classify_host(host), class, "{host}");
        }
    }
}
