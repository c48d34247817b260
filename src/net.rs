//! IP addresses and networks: what a key's `allowed_cidrs` and a request's
//! `client_ip` may be. Pure, no I/O.
//!
//! Stated once for the wire types that carry them: [`valid_cidrs`] as their
//! `validator` rule and [`cidr`] for the canonical form; [`IpDoc`] and
//! [`NetworkDoc`] as their OpenAPI schemas, whose patterns are std's and
//! `ipnet`'s grammars.

use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::ToSchema;
use validator::ValidationError;

/// An `allowed_cidrs` list's `validator` rule: 1 to 64 entries, each one
/// [`cidr`] takes.
pub fn valid_cidrs(cidrs: &[String]) -> Result<(), ValidationError> {
    let fail = |m: &'static str| Err(ValidationError::new("allowed_cidrs").with_message(m.into()));
    if cidrs.is_empty() || cidrs.len() > 64 {
        return fail("must hold 1 to 64 networks (null removes the restriction)");
    }
    if !cidrs.iter().all(|c| cidr(c).is_some()) {
        return fail("each entry must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8 or 2001:db8::/32");
    }
    Ok(())
}

/// A network in canonical form; a bare address is a one-address network.
pub fn cidr(c: &str) -> Option<String> {
    c.parse::<ipnet::IpNet>()
        .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
        .map(|net| net.to_string())
}

/// Whether `ip` is not a public unicast address: loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast, multicast,
/// documentation, benchmarking, reserved, or IPv6's unique-local, an IPv4
/// address mapped or NAT64-translated into IPv6 that is one of those, or
/// any IPv4-compatible (`::/96`) or IPv4-translated (`::ffff:0:0:0/96`)
/// address, public or not: nothing public is reached by those. A
/// webhook may not target one (`KEYWARD_WEBHOOK_ALLOW_PRIVATE`).
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    const V4: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    ];
    const V6: &[&str] = &[
        // IPv4-compatible (`::a.b.c.d`, deprecated), with `::` and `::1`.
        "::/96",
        // IPv4-translated (`::ffff:0:a.b.c.d`, RFC 2765).
        "::ffff:0:0:0/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ];
    let inside = |nets: &[&str], ip: IpAddr| {
        nets.iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .any(|n| n.contains(&ip))
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => inside(V4, IpAddr::V4(v4)),
        IpAddr::V6(v6) => {
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            let [a, b, _, _, _, _, c, d] = v6.segments();
            if a == 0x64 && b == 0xff9b && v6.segments()[2..6] == [0; 4] {
                let v4 = std::net::Ipv4Addr::from((u32::from(c) << 16) | u32::from(d));
                return inside(V4, IpAddr::V4(v4));
            }
            inside(V6, IpAddr::V6(v6))
        }
    }
}

/// The network an address is counted in for `key.new_network`: its /24
/// (IPv4, an IPv4-mapped address included) or its /64 (IPv6).
pub fn network_of(ip: std::net::IpAddr) -> ipnet::IpNet {
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    ipnet::IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| ipnet::IpNet::from(ip))
}

/// An IPv4 address as std parses it: four decimal octets of 0 to 255,
/// without leading zeros.
pub(crate) const IPV4: &str = "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}\
    (?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// An IPv6 address as std parses it (RFC 4291 section 2.2, as RFC 3986's
/// `IPv6address` spells it): eight groups of 1 to 4 hex digits, the last two
/// possibly an IPv4 address, and at most one `::` standing for one or more
/// groups of zeros.
fn ipv6() -> String {
    let h = "[0-9A-Fa-f]{1,4}";
    let ls32 = format!("(?:{h}:{h}|{IPV4})");
    let mut forms = vec![format!("(?:{h}:){{6}}{ls32}")];
    // `::` after up to `before` groups (the first form's `::` is first).
    for (before, after) in [(0, 5), (1, 4), (2, 3), (3, 2), (4, 1), (5, 0)] {
        let head = match before {
            0 => String::new(),
            n => format!("(?:(?:{h}:){{0,{}}}{h})?", n - 1),
        };
        forms.push(format!("{head}::(?:{h}:){{{after}}}{ls32}"));
    }
    forms.push(format!("(?:(?:{h}:){{0,5}}{h})?::{h}"));
    forms.push(format!("(?:(?:{h}:){{0,6}}{h})?::"));
    forms.join("|")
}

/// An IP address, as `ValidateIn::client_ip` takes it (unanchored).
pub fn ip_pattern() -> String {
    format!("{IPV4}|{}", ipv6())
}

/// An `allowed_cidrs` entry, as [`cidr`] takes it (unanchored): an address,
/// or an address and a prefix length (`ipnet` also takes a leading zero in
/// one; so does this).
pub fn network_pattern() -> String {
    format!(
        "{IPV4}(?:/(?:3[0-2]|[0-2]?[0-9]))?|(?:{})(?:/(?:12[0-8]|1[01][0-9]|0?[0-9]{{1,2}}))?",
        ipv6()
    )
}

/// A string schema for `pattern`, anchored.
fn pattern_schema(description: &str, pattern: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(format!("^(?:{pattern})$")))
        .examples([example])
        .into()
}

/// The OpenAPI schema `IpAddress`: an IPv4 or IPv6 address.
pub struct IpDoc;

impl utoipa::PartialSchema for IpDoc {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            "An IPv4 or IPv6 address, such as `203.0.113.7` or `2001:db8::1`.",
            &ip_pattern(),
            "203.0.113.7",
        )
    }
}

impl ToSchema for IpDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "IpAddress".into()
    }
}

/// The OpenAPI schema `Network`: what [`cidr`] takes.
pub struct NetworkDoc;

impl utoipa::PartialSchema for NetworkDoc {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            "An IPv4 or IPv6 network, such as `10.0.0.0/8` or `2001:db8::/32`, \
             or a bare address (a network of one).",
            &network_pattern(),
            "10.0.0.0/8",
        )
    }
}

impl ToSchema for NetworkDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "Network".into()
    }
}

#[cfg(test)]
mod internal_tests {
    use super::*;

    #[test]
    fn internal_addresses_are_told_from_public_ones() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::1.1.1.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:169.254.169.254",
            "::ffff:0:1.1.1.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn networks_are_a_slash_24_or_a_slash_64() {
        let net = |s: &str| network_of(s.parse().unwrap()).to_string();
        assert_eq!(net("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(net("::ffff:203.0.113.77"), "203.0.113.0/24");
        assert_eq!(net("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }
}
