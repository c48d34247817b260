//! The free text a caller may store (a project's label and owner, a key's
//! owner and server name, an operator's name, a webhook's description),
//! and the size of a key's metadata: pure rules, each with its OpenAPI
//! schema, so the validator and the document say the same.
//!
//! Text is shown again in the console, the CLI, logs and the audit trail,
//! so besides a length it may hold no control character (Unicode `Cc`) and
//! no bidirectional formatting character (which can make text read other
//! than it is, CVE-2021-42574).

use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::{ObjectBuilder, Schema, Type};
use validator::ValidationError;

/// The longest name: labels, owners, server names, operator names.
pub const NAME_MAX: u64 = 200;
/// The longest webhook description.
pub const DESCRIPTION_MAX: u64 = 500;
/// The most bytes a key's `metadata` may take as JSON.
pub const METADATA_MAX: usize = 16 * 1024;

/// What [`plain`] allows, as the document states it (ECMAScript and
/// Python syntax): no `Cc`, no bidirectional formatting character.
pub const PLAIN_PATTERN: &str =
    "^[^\\u0000-\\u001F\\u007F-\\u009F\\u061C\\u200E\\u200F\\u202A-\\u202E\\u2066-\\u2069]*$";

/// Whether `c` may be stored in free text.
pub fn allowed(c: char) -> bool {
    !c.is_control()
        && !matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` is `min` to `max` characters, all [`allowed`].
fn plain(text: &str, min: u64, max: u64, field: &'static str) -> Result<(), ValidationError> {
    let fail = |m: String| Err(ValidationError::new(field).with_message(m.into()));
    let chars = text.chars().count() as u64;
    if chars < min || chars > max {
        return fail(format!("must be {min} to {max} characters"));
    }
    match text.chars().all(allowed) {
        true => Ok(()),
        false => fail("may not hold control or bidirectional formatting characters".into()),
    }
}

/// A name: 1 to [`NAME_MAX`] characters of plain text.
pub fn name(text: &str) -> Result<(), ValidationError> {
    plain(text, 1, NAME_MAX, "name")
}

/// A description: up to [`DESCRIPTION_MAX`] characters of plain text.
pub fn description(text: &str) -> Result<(), ValidationError> {
    plain(text, 0, DESCRIPTION_MAX, "description")
}

/// Metadata of at most [`METADATA_MAX`] bytes as JSON.
pub fn metadata(value: &serde_json::Value) -> Result<(), ValidationError> {
    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    match size <= METADATA_MAX {
        true => Ok(()),
        false => Err(ValidationError::new("metadata")
            .with_message(format!("must be at most {METADATA_MAX} bytes as JSON").into())),
    }
}

fn text_schema(min: u64, max: u64, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min as usize))
        .max_length(Some(max as usize))
        .pattern(Some(PLAIN_PATTERN))
        .description(Some(description))
}

/// [`name`]'s schema.
pub fn name_schema() -> Schema {
    text_schema(
        1,
        NAME_MAX,
        "1 to 200 characters; no control or bidirectional formatting characters.",
    )
    .into()
}

/// [`description`]'s schema, `null` allowed (none).
pub fn description_schema() -> Schema {
    text_schema(
        0,
        DESCRIPTION_MAX,
        "At most 500 characters; no control or bidirectional formatting characters.",
    )
    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_pattern_allows_exactly_the_characters_the_validator_does() {
        // The pattern in Rust's syntax: `\uXXXX` is `\x{XXXX}` there.
        let escape = regex::Regex::new(r"\\u([0-9A-F]{4})").unwrap();
        let rust = regex::Regex::new(&escape.replace_all(PLAIN_PATTERN, r"\x{$1}")).unwrap();
        for c in (0..=0x3000u32)
            .chain([0xFEFF, 0x1F600])
            .filter_map(char::from_u32)
        {
            assert_eq!(
                rust.is_match(&c.to_string()),
                allowed(c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(name("support: Ada").is_ok());
        assert!(name("Zoë, 日本").is_ok());
        assert!(name(&"x".repeat(200)).is_ok());
        for bad in [
            String::new(),
            "x".repeat(201),
            "a\nb".into(),
            "a\u{1b}[31mb".into(),
            "a\u{202E}b".into(),
            "a\u{2066}b".into(),
            "a\u{85}b".into(),
        ] {
            assert!(name(&bad).is_err(), "{bad:?}");
        }
        assert!(description("").is_ok());
        assert!(description(&"x".repeat(501)).is_err());
    }

    #[test]
    fn metadata_is_bounded_as_json() {
        assert!(metadata(&serde_json::json!({ "plan": "pro" })).is_ok());
        assert!(metadata(&serde_json::json!("x".repeat(16382))).is_ok());
        assert!(metadata(&serde_json::json!("x".repeat(16383))).is_err());
    }
}
