//! Scopes: what a key may do. Pure, no I/O.
//!
//! A scope is 1 to 128 characters of `[A-Za-z0-9_.:/-]` and `*`. A request
//! may require scopes; every one must be granted by one of the key's scopes.
//!
//! Matching: `*` in a granted scope matches any run of characters without a
//! `:`, and the granted scope `*` alone matches everything. So `chat:*`
//! grants `chat:read` and `chat:write` but neither `admin:keys` nor
//! `chat:room:1`. A required scope is matched literally.
//!
//! What a scope list may hold is also stated here for the wire types that
//! carry one: [`valid_scopes`] as their `validator` rule, [`ScopeDoc`] as
//! their OpenAPI schema.

use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::ToSchema;
use validator::ValidationError;

/// Scopes a key may carry.
pub const MAX_SCOPES: usize = 64;
/// Characters in one scope.
pub const MAX_SCOPE_LEN: usize = 128;

/// Whether `s` is a well-formed scope.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SCOPE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-*".contains(&b))
}

/// A scope list's `validator` rule: at most [`MAX_SCOPES`], each well-formed.
pub fn valid_scopes(scopes: &[String]) -> Result<(), ValidationError> {
    if scopes.len() > MAX_SCOPES || !scopes.iter().all(|s| is_valid(s)) {
        return Err(ValidationError::new("scopes")
            .with_message("at most 64 scopes of 1 to 128 characters of [A-Za-z0-9_.:/-*]".into()));
    }
    Ok(())
}

/// The OpenAPI schema `Scope`: what [`is_valid`] accepts. Scopes travel as
/// plain strings; fields holding them name this type as their schema's
/// `value_type`.
pub struct ScopeDoc;

impl utoipa::PartialSchema for ScopeDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "A scope: 1 to {MAX_SCOPE_LEN} of `[A-Za-z0-9_.:/*-]` (see `scope`)."
            )))
            .pattern(Some(format!("^[A-Za-z0-9_.:/*-]{{1,{MAX_SCOPE_LEN}}}$")))
            .examples(["chat:write"])
            .into()
    }
}

impl ToSchema for ScopeDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "Scope".into()
    }
}

/// Whether the granted scope `granted` covers the required scope `required`.
pub fn grants(granted: &str, required: &str) -> bool {
    if granted == "*" {
        return true;
    }
    // `*` never matches `:`, so the `:`-separated segments pair up one to one.
    let mut g = granted.split(':');
    let mut r = required.split(':');
    loop {
        match (g.next(), r.next()) {
            (Some(g), Some(r)) if glob(g.as_bytes(), r.as_bytes()) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The first of `required` that none of `granted` covers.
pub fn first_missing<'a, G: AsRef<str>>(granted: &[G], required: &'a [String]) -> Option<&'a str> {
    required
        .iter()
        .find(|r| !granted.iter().any(|g| grants(g.as_ref(), r)))
        .map(String::as_str)
}

/// Parses a comma-separated list (the `X-Keyward-Required-Scopes` header).
/// Blank items are ignored; `Err` names the first malformed one's position.
pub fn parse_list(list: &str) -> Result<Vec<String>, usize> {
    let scopes: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match scopes.iter().position(|s| !is_valid(s)) {
        Some(i) => Err(i),
        None if scopes.len() > MAX_SCOPES => Err(MAX_SCOPES),
        None => Ok(scopes),
    }
}

/// `*` matches any run of bytes (segments hold no `:`); everything else is literal.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently matches up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more byte and retry after it.
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matching_follows_the_documented_rules() {
        let cases = [
            ("*", "anything:at:all", true),
            ("*", "admin:keys", true),
            ("chat:*", "chat:read", true),
            ("chat:*", "chat:write", true),
            ("chat:*", "admin:keys", false),
            ("chat:*", "chat:room:1", false),
            ("chat:*", "chat", false),
            ("chat:*", "chat:", true),
            ("chat:read", "chat:read", true),
            ("chat:read", "chat:write", false),
            ("chat:r*d", "chat:read", true),
            ("chat:r*d", "chat:rd", true),
            ("chat:r*d", "chat:reads", false),
            ("*:read", "chat:read", true),
            ("*:read", "chat:room:read", false),
            ("*:*", "a:b", true),
            ("*:*", "a", false),
            ("files/*", "files/a/b.txt", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
        ];
        for (granted, required, expected) in cases {
            assert_eq!(
                grants(granted, required),
                expected,
                "{granted:?} grants {required:?}"
            );
        }
    }

    #[test]
    fn a_key_without_scopes_passes_only_requests_that_require_none() {
        let none: [&str; 0] = [];
        assert_eq!(first_missing(&none, &[]), None);
        assert_eq!(first_missing(&none, &["a".into()]), Some("a"));
        let granted = ["chat:*", "files:read"];
        let required = ["chat:write".to_owned(), "files:write".to_owned()];
        assert_eq!(first_missing(&granted, &required), Some("files:write"));
    }

    #[test]
    fn scope_lists_parse_and_reject_what_is_malformed() {
        assert_eq!(parse_list(""), Ok(vec![]));
        assert_eq!(
            parse_list(" a:b , c ,,"),
            Ok(vec!["a:b".to_owned(), "c".to_owned()])
        );
        assert_eq!(parse_list("a,b c"), Err(1));
        assert_eq!(parse_list("é"), Err(0));
        assert!(parse_list(&"x".repeat(129)).is_err());
        assert!(parse_list(&vec!["a"; 65].join(",")).is_err());
        assert!(is_valid("chat:*") && is_valid("a/b.c-d_e") && !is_valid(""));
    }

    /// A straightforward reference: regex-like semantics by recursion.
    fn reference(g: &[u8], r: &[u8]) -> bool {
        match g.split_first() {
            None => r.is_empty(),
            Some((b'*', rest)) => (0..=r.len())
                .take_while(|&i| i == 0 || r[i - 1] != b':')
                .any(|i| reference(rest, &r[i..])),
            Some((c, rest)) => r.first() == Some(c) && reference(rest, &r[1..]),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matching_agrees_with_a_reference_implementation(
            g in "[ab:*]{0,8}", r in "[ab:]{0,8}"
        ) {
            let expected = g == "*" || reference(g.as_bytes(), r.as_bytes());
            prop_assert_eq!(grants(&g, &r), expected);
        }

        #[test]
        fn a_granted_scope_without_stars_grants_only_itself(g in "[a-c:]{1,6}", r in "[a-c:]{1,6}") {
            prop_assert_eq!(grants(&g, &r), g == r);
        }
    }
}
