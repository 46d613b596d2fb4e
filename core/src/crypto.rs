//! Secrets at rest and on the wire: AES-256-GCM for webhook headers and
//! signing secrets, API key generation and hashing, webhook secrets.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const NONCE_LEN: usize = 12;

/// What a template's webhook headers are encrypted for (see [`context`]).
pub const WEBHOOK_HEADERS: &str = "webhook-headers";
/// What a template's signing secrets, current and previous, are encrypted
/// for (a rotation moves the current one to the previous one's column).
pub const WEBHOOK_SECRET: &str = "webhook-secret";

/// The context a template's secret is sealed to: its template and what it
/// is, bound into the ciphertext as AES-GCM associated data. A ciphertext
/// copied into another template (another tenant's), or from the headers
/// to the secret, does not open there: whoever can write to the database
/// without the key cannot have the worker send one tenant's headers to
/// another's URL, or the API show them as a secret.
pub fn context(template_id: uuid::Uuid, purpose: &str) -> Vec<u8> {
    format!("paperhook/template/{template_id}/{purpose}").into_bytes()
}

/// Whether secrets are sealed to their template (see [`context`]): the
/// `secret_sealing` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sealing {
    /// Written unsealed, as versions before sealing wrote them (and can
    /// read them): for a rolling upgrade from one, or before going back to
    /// one (with `admin reencrypt`, which then unseals). Both forms read.
    Off,
    /// Written sealed; unsealed ones still read (until `admin reencrypt`).
    #[default]
    On,
    /// Written sealed, and only sealed ones read: once `admin reencrypt`
    /// has sealed every secret, nothing copied from an old backup or an
    /// unsealed row opens anywhere.
    Strict,
}

impl std::str::FromStr for Sealing {
    type Err = String;
    fn from_str(s: &str) -> Result<Sealing, String> {
        match s {
            "off" => Ok(Sealing::Off),
            "on" => Ok(Sealing::On),
            "strict" => Ok(Sealing::Strict),
            other => Err(format!(
                "must be \"off\", \"on\" or \"strict\", not {other:?}"
            )),
        }
    }
}

/// Encryption keys by id; the first one encrypts, all decrypt.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(u8, Aes256Gcm)>,
    sealing: Sealing,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("sealing", &self.sealing)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext is too short or malformed")]
    Malformed,
    #[error("ciphertext was made with key id {0}, which is not configured")]
    UnknownKey(u8),
    #[error("ciphertext does not authenticate with key id {0}")]
    Authentication(u8),
    #[error(
        "ciphertext is not sealed to its template (written before sealing, or copied from \
         elsewhere) and secret_sealing is strict; run `paperhook-api admin reencrypt` with \
         secret_sealing = \"on\" first"
    )]
    Unsealed,
}

impl Keyring {
    /// Parses `ID:BASE64[,ID:BASE64...]`; the message names the bad entry.
    pub fn parse(spec: &str) -> Result<Keyring, String> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) = entry
                .split_once(':')
                .ok_or_else(|| "each entry must be ID:BASE64 (ID 0-255)".to_string())?;
            let id: u8 = id
                .parse()
                .map_err(|_| format!("key id {id:?} must be a number 0-255"))?;
            let bytes = B64
                .decode(key)
                .map_err(|_| format!("key {id} is not valid base64"))?;
            if bytes.len() != 32 {
                return Err(format!("key {id} must be 32 bytes, not {}", bytes.len()));
            }
            if keys.iter().any(|(other, _)| *other == id) {
                return Err(format!("key id {id} is listed twice"));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|e| e.to_string())?;
            keys.push((id, cipher));
        }
        if keys.is_empty() {
            return Err(
                "no key configured; generate one with `paperhook-api admin gen-key` \
                 and set PAPERHOOK_ENCRYPTION_KEYS"
                    .into(),
            );
        }
        Ok(Keyring {
            keys,
            sealing: Sealing::default(),
        })
    }

    /// This keyring writing and reading secrets as `sealing` says.
    pub fn with_sealing(mut self, sealing: Sealing) -> Keyring {
        self.sealing = sealing;
        self
    }

    /// A fresh `0:BASE64` key specification.
    pub fn generate_spec(id: u8) -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        format!("{id}:{}", B64.encode(key))
    }

    /// Encrypts `plaintext` with the current key, sealed to `context`
    /// (see [`context`]) unless sealing is off: `key id || nonce ||
    /// ciphertext and tag`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let context = if self.sealing == Sealing::Off {
            &[][..]
        } else {
            context
        };
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: context,
        };
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(*id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts what [`Keyring::seal`] made for `context`. A ciphertext
    /// written unsealed (before sealing, or with it off) still opens,
    /// unless sealing is strict.
    pub fn open(&self, data: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self.open_as(data, context)? {
            (_, false) if self.sealing == Sealing::Strict => Err(CryptoError::Unsealed),
            (plain, _) => Ok(plain),
        }
    }

    /// The plaintext, and whether it was sealed to `context` (not written
    /// before contexts).
    fn open_as(&self, data: &[u8], context: &[u8]) -> Result<(Vec<u8>, bool), CryptoError> {
        if data.len() < 1 + NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let id = data[0];
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, c)| c)
            .ok_or(CryptoError::UnknownKey(id))?;
        let nonce = Nonce::from_slice(&data[1..1 + NONCE_LEN]);
        let msg = &data[1 + NONCE_LEN..];
        if let Ok(plain) = cipher.decrypt(nonce, Payload { msg, aad: context }) {
            return Ok((plain, true));
        }
        cipher
            .decrypt(nonce, msg)
            .map(|plain| (plain, false))
            .map_err(|_| CryptoError::Authentication(id))
    }

    /// True when `data` was not made with the current (first) key, or is
    /// not in the form sealing asks for (sealed to `context`, or unsealed
    /// when sealing is off): `admin reencrypt` writes it again. Also true
    /// for what no key opens (reencrypt then names it).
    pub fn needs_reencrypt(&self, data: &[u8], context: &[u8]) -> bool {
        let want_sealed = self.sealing != Sealing::Off;
        data.first() != Some(&self.keys[0].0)
            || !matches!(self.open_as(data, context), Ok((_, sealed)) if sealed == want_sealed)
    }

    /// Reads `data` in either form and writes it as `seal` would: what
    /// `admin reencrypt` does to each secret.
    pub fn reseal(&self, data: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (plain, _) = self.open_as(data, context)?;
        Ok(self.seal(&plain, context))
    }

    /// The form written before sealing (no associated data), for the tests
    /// of the upgrade from it.
    #[doc(hidden)]
    pub fn encrypt_without_context(&self, plaintext: &[u8]) -> Vec<u8> {
        self.clone().with_sealing(Sealing::Off).seal(plaintext, &[])
    }
}

const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A random token of `len` characters from an unambiguous alphabet.
pub fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            // Rejection-free enough: 256 % 57 bias is irrelevant for 190+ bit tokens,
            // but use u32 to make it negligible anyway.
            ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char
        })
        .collect()
}

/// A new API key: `ph_<prefix>_<secret>`; the prefix identifies it in listings.
pub struct NewApiKey {
    pub key: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

pub const KEY_PREFIX_LEN: usize = 10;

pub fn generate_api_key() -> NewApiKey {
    let prefix = format!("ph_{}", random_token(KEY_PREFIX_LEN - 3));
    let key = format!("{prefix}_{}", random_token(36));
    let hash = hash_api_key(&key);
    NewApiKey { key, prefix, hash }
}

pub fn hash_api_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The prefix of a well-formed key, or `None`.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let prefix = key.get(..KEY_PREFIX_LEN)?;
    (prefix.starts_with("ph_") && key.as_bytes().get(KEY_PREFIX_LEN) == Some(&b'_'))
        .then_some(prefix)
}

/// Constant-time comparison of a presented key with a stored hash.
pub fn verify_api_key(key: &str, stored_hash: &[u8]) -> bool {
    hash_api_key(key).ct_eq(stored_hash).into()
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of 24 random bytes.
pub fn generate_webhook_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", B64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rotation() {
        let here = context(uuid::Uuid::nil(), WEBHOOK_HEADERS);
        let old = Keyring::parse(&Keyring::generate_spec(0)).unwrap();
        let ct = old.seal(b"Authorization: Bearer s3cret", &here);
        assert!(!ct.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(
            old.open(&ct, &here).unwrap(),
            b"Authorization: Bearer s3cret"
        );

        let old_spec = Keyring::generate_spec(0);
        let new_spec = Keyring::generate_spec(1);
        let old = Keyring::parse(&old_spec).unwrap();
        let both = Keyring::parse(&format!("{new_spec},{old_spec}")).unwrap();
        let ct = old.seal(b"x", &here);
        assert_eq!(both.open(&ct, &here).unwrap(), b"x");
        assert!(both.needs_reencrypt(&ct, &here));
        assert!(!both.needs_reencrypt(&both.seal(b"x", &here), &here));
        let only_new = Keyring::parse(&new_spec).unwrap();
        assert_eq!(only_new.open(&ct, &here), Err(CryptoError::UnknownKey(0)));
        let mut tampered = both.seal(b"hello", &here);
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            both.open(&tampered, &here),
            Err(CryptoError::Authentication(1))
        );
    }

    /// A ciphertext opens only for the template and the use it was sealed
    /// to; one written before contexts still opens, and is due for
    /// `admin reencrypt`.
    #[test]
    fn sealed_secrets_open_only_where_they_belong() {
        let keys = Keyring::parse(&Keyring::generate_spec(0)).unwrap();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let headers = keys.seal(
            b"{\"Authorization\":\"Bearer a\"}",
            &context(a, WEBHOOK_HEADERS),
        );
        assert!(keys.open(&headers, &context(a, WEBHOOK_HEADERS)).is_ok());
        for elsewhere in [context(b, WEBHOOK_HEADERS), context(a, WEBHOOK_SECRET)] {
            assert_eq!(
                keys.open(&headers, &elsewhere),
                Err(CryptoError::Authentication(0))
            );
        }
        let before = keys.encrypt_without_context(b"whsec_old");
        assert_eq!(
            keys.open(&before, &context(a, WEBHOOK_SECRET)).unwrap(),
            b"whsec_old"
        );
        assert!(keys.needs_reencrypt(&before, &context(a, WEBHOOK_SECRET)));
        assert!(!keys.needs_reencrypt(&headers, &context(a, WEBHOOK_HEADERS)));

        // Strict: only sealed ones open; reseal (reencrypt) seals the rest.
        let strict = keys.clone().with_sealing(Sealing::Strict);
        let secret = context(a, WEBHOOK_SECRET);
        assert_eq!(strict.open(&before, &secret), Err(CryptoError::Unsealed));
        let sealed = keys.reseal(&before, &secret).unwrap();
        assert_eq!(strict.open(&sealed, &secret).unwrap(), b"whsec_old");
        assert!(!strict.needs_reencrypt(&sealed, &secret));
        // Off: written unsealed (an older version reads them), both read;
        // reencrypt with it off unseals, for going back to such a version.
        let off = keys.clone().with_sealing(Sealing::Off);
        let unsealed = off.seal(b"whsec_new", &secret);
        assert_eq!(
            keys.clone()
                .with_sealing(Sealing::Off)
                .open(&sealed, &secret)
                .unwrap(),
            b"whsec_old"
        );
        assert!(off.needs_reencrypt(&sealed, &secret));
        assert!(!off.needs_reencrypt(&unsealed, &secret));
        assert_eq!(strict.open(&unsealed, &secret), Err(CryptoError::Unsealed));
        let unsealed_again = off.reseal(&sealed, &secret).unwrap();
        assert_eq!(
            keys.open(&unsealed_again, &context(b, WEBHOOK_HEADERS))
                .unwrap(),
            b"whsec_old",
            "unsealed: opens anywhere, as before sealing"
        );
        assert_eq!("strict".parse(), Ok(Sealing::Strict));
        assert!("yes".parse::<Sealing>().is_err());
    }

    #[test]
    fn bad_key_specs_are_named() {
        assert!(Keyring::parse("").unwrap_err().contains("gen-key"));
        assert!(Keyring::parse("x:abc").unwrap_err().contains("\"x\""));
        assert!(Keyring::parse("0:YWJj").unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn api_keys() {
        let k = generate_api_key();
        assert_eq!(api_key_prefix(&k.key), Some(k.prefix.as_str()));
        assert!(verify_api_key(&k.key, &k.hash));
        assert!(!verify_api_key(&format!("{}x", k.key), &k.hash));
        assert_eq!(api_key_prefix("nope"), None);
        assert_eq!(api_key_prefix("ph_abcdefgXsecret"), None);
        assert!(generate_webhook_secret().starts_with("whsec_"));
    }
}
