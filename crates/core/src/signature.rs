//! `X-Hub-Signature-256` verification: HMAC-SHA256 over the raw body, compared in constant time
//! (`Mac::verify_slice`). Several secrets may be configured so a secret can be rotated without a
//! failed delivery: add the new one, change it in GitHub, remove the old one.

use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not `sha256=` followed by 64 hex digits")]
    Malformed,
    #[error("signature does not match any configured secret")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// Keys prepared once per cold start: the HMAC key schedule is computed once, not per delivery.
#[derive(Clone)]
pub struct WebhookSecrets {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} key(s), [redacted])", self.keys.len())
    }
}

impl WebhookSecrets {
    pub fn new(secrets: &[Secret]) -> Self {
        let keys = secrets
            .iter()
            .filter(|s| !s.expose().is_empty())
            .map(|s| HmacSha256::new_from_slice(s.expose().as_bytes()).expect("HMAC accepts any key length"))
            .collect();
        Self { keys }
    }

    /// Secrets from one stored value: several separated by newlines or commas (rotation).
    pub fn parse_list(raw: &Secret) -> Self {
        let list: Vec<Secret> = raw
            .expose()
            .split(['\n', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        Self::new(&list)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `header` (the single `X-Hub-Signature-256` value) over `body`.
    pub fn verify(&self, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
        if self.keys.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_sig = header.strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
        let mut expected = [0u8; 32];
        if hex_sig.len() != 64 || hex::decode_to_slice(hex_sig, &mut expected).is_err() {
            return Err(SignatureError::Malformed);
        }
        // Every key is tried, match or not, so timing does not reveal which secret matched.
        let mut ok = false;
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(body);
            ok |= mac.verify_slice(&expected).is_ok();
        }
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// `sha256=<hex>` for `body` under `secret`, as GitHub computes it. For tests and simulators.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector from GitHub's "Validating webhook deliveries" documentation.
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &str = "Hello, World!";
    const DOC_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secrets(list: &[&str]) -> WebhookSecrets {
        WebhookSecrets::new(&list.iter().map(|s| Secret::new(*s)).collect::<Vec<_>>())
    }

    #[test]
    fn github_documentation_vector() {
        assert_eq!(sign(DOC_SECRET, DOC_BODY.as_bytes()), DOC_SIG);
        assert_eq!(secrets(&[DOC_SECRET]).verify(DOC_BODY.as_bytes(), Some(DOC_SIG)), Ok(()));
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let s = secrets(&["old-secret", DOC_SECRET]);
        assert_eq!(s.verify(DOC_BODY.as_bytes(), Some(DOC_SIG)), Ok(()));
        let old = sign("old-secret", DOC_BODY.as_bytes());
        assert_eq!(s.verify(DOC_BODY.as_bytes(), Some(&old)), Ok(()));
        let parsed = WebhookSecrets::parse_list(&Secret::new(format!("old-secret,\n{DOC_SECRET}\n")));
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed.verify(DOC_BODY.as_bytes(), Some(&old)), Ok(()));
    }

    #[test]
    fn rejects_everything_else() {
        let s = secrets(&[DOC_SECRET]);
        let body = DOC_BODY.as_bytes();
        let other_secret = sign("another", body);
        let other_body = sign(DOC_SECRET, b"Hello, World?");
        let upper = DOC_SIG.to_uppercase().replace("SHA256=", "sha256=");
        let cases: Vec<(Option<&str>, SignatureError)> = vec![
            (None, SignatureError::Missing),
            (Some(""), SignatureError::Malformed),
            (Some("sha1=0123456789abcdef0123456789abcdef01234567"), SignatureError::Malformed),
            (Some(&DOC_SIG[7..]), SignatureError::Malformed),
            (Some("sha256=zz"), SignatureError::Malformed),
            (Some(&other_secret), SignatureError::Mismatch),
            (Some(&other_body), SignatureError::Mismatch),
        ];
        for (header, want) in cases {
            assert_eq!(s.verify(body, header), Err(want), "{header:?}");
        }
        // Two signatures joined by a proxy are not one valid signature.
        let joined = format!("{DOC_SIG},{DOC_SIG}");
        assert_eq!(s.verify(body, Some(&joined)), Err(SignatureError::Malformed));
        // Hex is case-insensitive in the encoding, so an upper-case copy still matches.
        assert_eq!(s.verify(body, Some(&upper)), Ok(()));
        assert_eq!(secrets(&[]).verify(body, Some(DOC_SIG)), Err(SignatureError::NoSecret));
        assert_eq!(secrets(&[""]).verify(body, Some(DOC_SIG)), Err(SignatureError::NoSecret));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = secrets(&[DOC_SECRET]);
        assert!(!format!("{s:?}").contains("Secret to"));
    }
}
