//! Standard Webhooks v1 signing: `webhook-signature: v1,<base64 of
//! HMAC-SHA256("{id}.{timestamp}.{body}")>` under the endpoint's secret,
//! `whsec_` and the base64 of its bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::Result;

/// The prefix of every endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the spec asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A new endpoint secret from the OS CSPRNG: `whsec_` and 32 bytes in base64.
pub fn new_secret() -> Result<String> {
    let bytes: [u8; SECRET_BYTES] = crate::admin::os_bytes()?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The `webhook-signature` header's value for one attempt; `None` for a
/// secret that is not `whsec_` and base64 (never one keyward made).
pub fn signature(secret: &str, message_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specs_reference_libraries_do() {
        // The test vector of the standard-webhooks reference libraries.
        let got = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            got.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert!(signature("nope", "m", 1, "{}").is_none());
    }

    #[test]
    fn new_secrets_are_whsec_and_32_bytes() {
        let s = new_secret().unwrap();
        let bytes = STANDARD
            .decode(s.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert_ne!(s, new_secret().unwrap());
    }
}
