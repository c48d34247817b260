//! The API key format: `sk-proj.<project_id>.<key_id>.<secret>`.
//!
//! Pure parsing and formatting, no I/O, so it can be fuzzed alone; beyond
//! std it uses only derives (thiserror for the error, serde to serialize the
//! ids). Malformed keys are normal traffic for a gateway, so a rejection is a
//! small `Copy` enum that never echoes the input.
//!
//! The prefix `sk-proj.` is part of every key ever minted: changing it
//! invalidates every key in every deployment. Never change it.

use std::fmt;

/// The fixed prefix of every key.
pub const PREFIX: &str = "sk-proj.";
/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Length of a project id: 1 to 64 of `[A-Za-z0-9_-]`.
pub const MAX_PROJECT_LEN: usize = 64;
/// A project id's grammar, in words for messages. The same grammar names
/// deployments and Redis users (`config::is_plain_name`).
pub const PROJECT_ID_GRAMMAR: &str = "1 to 64 of [A-Za-z0-9_-]";
/// A project id's grammar as the OpenAPI document's pattern (and the
/// console's form, through `GET /v1/admin/catalog`).
pub const PROJECT_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// Key ids are `k_` followed by at least this many of `[A-Za-z0-9]`.
pub const MIN_KEY_ID_BODY: usize = 7;
/// A key id's grammar as the OpenAPI document's pattern (at most what fits
/// a key of [`MAX_KEY_LEN`]).
pub const KEY_ID_PATTERN: &str = "^k_[A-Za-z0-9]{7,254}$";
/// Secrets have at least this many of `[A-Za-z0-9_-]`.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a string is not a key. Deliberately carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("key does not start with `{PREFIX}`")]
    Prefix,
    #[error("key does not have four dot-separated parts")]
    Parts,
    #[error("project id must be {PROJECT_ID_GRAMMAR}")]
    ProjectId,
    #[error("key id must be `k_` and at least {MIN_KEY_ID_BODY} of [A-Za-z0-9]")]
    KeyId,
    #[error("secret must be at least {MIN_SECRET_LEN} of [A-Za-z0-9_-]")]
    Secret,
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `s` is [`PROJECT_ID_GRAMMAR`]: a project id, a deployment's
/// name or a Redis user's.
pub fn is_plain_id(s: &str) -> bool {
    (1..=MAX_PROJECT_LEN).contains(&s.len()) && s.bytes().all(is_id_byte)
}

/// A project id: [`PROJECT_ID_GRAMMAR`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if !is_plain_id(s) {
            return Err(KeyError::ProjectId);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key id: `k_` then at least 7 of `[A-Za-z0-9]`. An identifier, not a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        match s.strip_prefix("k_") {
            Some(body)
                if body.len() >= MIN_KEY_ID_BODY
                    && s.len() <= MAX_KEY_LEN
                    && body.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Ok(Self(s.to_owned()))
            }
            _ => Err(KeyError::KeyId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret part of a key. Its `Debug` prints no secret, and it has no
/// `Display`, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.len() < MIN_SECRET_LEN || !s.bytes().all(is_id_byte) {
            return Err(KeyError::Secret);
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret's bytes, for hashing. Never log them.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A parsed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub project_id: ProjectId,
    pub key_id: KeyId,
    pub secret: Secret,
}

impl ApiKey {
    /// Parses `sk-proj.<project_id>.<key_id>.<secret>`. Never panics.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        let rest = s.strip_prefix(PREFIX).ok_or(KeyError::Prefix)?;
        let mut parts = rest.split('.');
        let (Some(project), Some(key_id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Parts);
        };
        Ok(Self {
            project_id: ProjectId::parse(project)?,
            key_id: KeyId::parse(key_id)?,
            secret: Secret::parse(secret)?,
        })
    }

    /// The full key, as handed to its holder once at mint.
    pub fn expose(&self) -> String {
        format!(
            "{PREFIX}{}.{}.{}",
            self.project_id, self.key_id, self.secret.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";

    fn key(project: &str, key_id: &str, secret: &str) -> String {
        format!("{PREFIX}{project}.{key_id}.{secret}")
    }

    #[test]
    fn a_well_formed_key_parses_and_formats_back() {
        let s = key("alpha_1-x", "k_abc1234", SECRET);
        let k = ApiKey::parse(&s).unwrap();
        assert_eq!(k.project_id.as_str(), "alpha_1-x");
        assert_eq!(k.key_id.as_str(), "k_abc1234");
        assert_eq!(k.secret.expose(), SECRET.as_bytes());
        assert_eq!(k.expose(), s);
    }

    #[test]
    fn malformed_keys_are_rejected_with_the_right_reason() {
        let long_project = "p".repeat(65);
        let max_project = "p".repeat(64);
        let too_long = key("p", "k_abc1234", &"s".repeat(250));
        let cases: Vec<(String, KeyError, &str)> = vec![
            (String::new(), KeyError::Prefix, "empty"),
            ("sk-proj".into(), KeyError::Prefix, "prefix without dot"),
            (
                format!("sk-live.p.k_abc1234.{SECRET}"),
                KeyError::Prefix,
                "other prefix",
            ),
            (
                format!("SK-PROJ.p.k_abc1234.{SECRET}"),
                KeyError::Prefix,
                "upper-case prefix",
            ),
            ("sk-proj.".into(), KeyError::Parts, "prefix only"),
            (
                "sk-proj.p.k_abc1234".to_string(),
                KeyError::Parts,
                "three parts",
            ),
            (
                format!("sk-proj.p.k_abc1234.{SECRET}.x"),
                KeyError::Parts,
                "five parts",
            ),
            (
                key("", "k_abc1234", SECRET),
                KeyError::ProjectId,
                "empty project",
            ),
            (
                key(&long_project, "k_abc1234", SECRET),
                KeyError::ProjectId,
                "65-byte project",
            ),
            (
                key("a b", "k_abc1234", SECRET),
                KeyError::ProjectId,
                "space in project",
            ),
            (
                key("a:b", "k_abc1234", SECRET),
                KeyError::ProjectId,
                "colon in project",
            ),
            (
                key("ä", "k_abc1234", SECRET),
                KeyError::ProjectId,
                "non-ascii project",
            ),
            (
                key("p", "k_abc123", SECRET),
                KeyError::KeyId,
                "key id body of 6",
            ),
            (
                key("p", "x_abc1234", SECRET),
                KeyError::KeyId,
                "key id without k_",
            ),
            (
                key("p", "k_abc-1234", SECRET),
                KeyError::KeyId,
                "dash in key id",
            ),
            (
                key("p", "k_abc_1234", SECRET),
                KeyError::KeyId,
                "underscore in key id body",
            ),
            (
                key("p", "k_abc1234", &SECRET[1..]),
                KeyError::Secret,
                "31-byte secret",
            ),
            (
                key("p", "k_abc1234", &format!("{SECRET}!")),
                KeyError::Secret,
                "bang in secret",
            ),
            (
                key("p", "k_abc1234", &format!("{SECRET}\0")),
                KeyError::Secret,
                "nul in secret",
            ),
            (too_long, KeyError::TooLong, "over 256 bytes"),
        ];
        for (input, want, why) in cases {
            assert_eq!(ApiKey::parse(&input), Err(want), "case: {why}");
        }
        assert!(ApiKey::parse(&key(&max_project, "k_abc1234", SECRET)).is_ok());
    }

    #[test]
    fn a_key_of_exactly_256_bytes_is_accepted() {
        let head = key("p", "k_abc1234", "");
        let s = key("p", "k_abc1234", &"s".repeat(MAX_KEY_LEN - head.len()));
        assert_eq!(s.len(), MAX_KEY_LEN);
        assert!(ApiKey::parse(&s).is_ok());
    }

    #[test]
    fn the_project_id_pattern_and_words_are_the_parsers_grammar() {
        let pattern = regex::Regex::new(PROJECT_ID_PATTERN).unwrap();
        let (longest, too_long) = ("a".repeat(MAX_PROJECT_LEN), "a".repeat(MAX_PROJECT_LEN + 1));
        for s in [
            "a", "A-_9", &longest, "", &too_long, "a.b", "é", "a b", "a:b", "*",
        ] {
            assert_eq!(pattern.is_match(s), is_plain_id(s), "{s:?}");
        }
        assert!(PROJECT_ID_GRAMMAR.contains(&MAX_PROJECT_LEN.to_string()));
        let pattern = regex::Regex::new(KEY_ID_PATTERN).unwrap();
        for s in [
            "k_abc1234",
            "k_abc123",
            "k_abc_1234",
            "kk_abc1234",
            "k_abcdefgé",
            "k_ABCdef9",
        ] {
            assert_eq!(pattern.is_match(s), KeyId::parse(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let k = ApiKey::parse(&key("p", "k_abc1234", SECRET)).unwrap();
        assert!(!format!("{k:?}").contains(SECRET));
        assert!(!KeyError::Secret.to_string().contains(SECRET));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn any_string_parses_or_is_rejected_without_panicking(s in "\\PC{0,300}") {
            let _ = ApiKey::parse(&s);
        }

        #[test]
        fn keys_of_the_documented_shape_round_trip(
            project in &PROJECT_ID_PATTERN[1..PROJECT_ID_PATTERN.len() - 1],
            key_id in "k_[A-Za-z0-9]{7,40}",
            secret in "[A-Za-z0-9_-]{32,100}",
        ) {
            let s = format!("{PREFIX}{project}.{key_id}.{secret}");
            let parsed = ApiKey::parse(&s);
            if s.len() > MAX_KEY_LEN {
                proptest::prop_assert_eq!(parsed, Err(KeyError::TooLong));
            } else {
                proptest::prop_assert_eq!(parsed.map(|k| k.expose()), Ok(s));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep; the property test below goes further.
        let alphabet = ["sk-proj.", ".", "k_", "a", "é", "\u{0}", "-", "_", "9", "."];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push_str(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = ApiKey::parse(&s);
        }
    }
}
