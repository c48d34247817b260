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

/// An IPv4 address as std parses it: four decimal octets of 0 to 255,
/// without leading zeros.
const IPV4: &str = "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}\
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
