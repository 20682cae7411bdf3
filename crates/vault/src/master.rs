//! The master keys that wrap subject keys: from configuration, never stored in the database.
//! The first key wraps; the others only unwrap (rotation: put a new key first, keep the old
//! ones after it, run `callbackd rewrap-keys`, then drop the old ones).

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::VaultError;

pub const MASTER_KEY_BYTES: usize = 32;

/// The configured master keys, current first.
#[derive(Clone)]
pub struct MasterKeys {
    keys: Vec<(String, [u8; MASTER_KEY_BYTES])>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "MasterKeys({ids:?})")
    }
}

impl MasterKeys {
    /// Reads `id:base64` entries separated by newlines or commas; `#` starts a comment. The
    /// key is 32 random bytes in standard or URL-safe base64; the id 1-32 letters, digits,
    /// `-` or `_`.
    pub fn parse(text: &str) -> Result<MasterKeys, String> {
        let mut keys: Vec<(String, [u8; MASTER_KEY_BYTES])> = Vec::new();
        for (i, entry) in text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
        {
            let (id, encoded) = entry
                .split_once(':')
                .ok_or_else(|| format!("entry {} is not <id>:<base64 key>", i + 1))?;
            let id_ok = !id.is_empty()
                && id.len() <= 32
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !id_ok {
                return Err(format!(
                    "entry {}: the id must be 1-32 letters, digits, - or _",
                    i + 1
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .or_else(|_| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(encoded.trim().trim_end_matches('='))
                })
                .map_err(|_| format!("entry {} ({id}): the key is not base64", i + 1))?;
            let key: [u8; MASTER_KEY_BYTES] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                format!(
                    "entry {} ({id}): the key is {} bytes, not {MASTER_KEY_BYTES}",
                    i + 1,
                    bytes.len()
                )
            })?;
            if keys.iter().any(|(known, _)| known == id) {
                return Err(format!("entry {}: the id {id} is used twice", i + 1));
            }
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err("holds no key".into());
        }
        Ok(MasterKeys { keys })
    }

    /// A fresh key with id `id`, as configuration text (for `callbackd dev` and tests).
    pub fn generate_text(id: &str) -> String {
        let mut key = [0u8; MASTER_KEY_BYTES];
        super::fill_random(&mut key);
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Wraps `key` with the current master key, bound to `binding`.
    pub(crate) fn wrap(&self, key: &[u8; 32], binding: &[u8]) -> (String, Vec<u8>) {
        let (id, master) = &self.keys[0];
        let cipher = XChaCha20Poly1305::new(Key::from_slice(master));
        let mut nonce = [0u8; 24];
        super::fill_random(&mut nonce);
        let aad = aad(id, binding);
        let mut wrapped = nonce.to_vec();
        wrapped.extend(
            cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: key,
                        aad: &aad,
                    },
                )
                .expect("a 32-byte key encrypts"),
        );
        (id.clone(), wrapped)
    }

    /// Unwraps a key wrapped by the master key `id`.
    pub(crate) fn unwrap(
        &self,
        id: &str,
        wrapped: &[u8],
        binding: &[u8],
    ) -> Result<[u8; 32], VaultError> {
        let (_, master) = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .ok_or_else(|| VaultError::UnknownMasterKey(id.to_owned()))?;
        if wrapped.len() < 24 {
            return Err(VaultError::Corrupt("wrapped key too short".into()));
        }
        let (nonce, ciphertext) = wrapped.split_at(24);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(master));
        let clear = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad(id, binding),
                },
            )
            .map_err(|_| {
                VaultError::Corrupt(format!("a key does not unwrap with master key {id}"))
            })?;
        clear
            .try_into()
            .map_err(|_| VaultError::Corrupt("a wrapped key is not 32 bytes".into()))
    }
}

fn aad(id: &str, binding: &[u8]) -> Vec<u8> {
    let mut aad = id.as_bytes().to_vec();
    aad.push(0);
    aad.extend_from_slice(binding);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_parse_and_name_their_problems() {
        let a = MasterKeys::generate_text("k2");
        let b = MasterKeys::generate_text("k1");
        let keys =
            MasterKeys::parse(&format!("# current first, then older\n{a}\n{b} # old\n")).unwrap();
        assert_eq!(keys.current_id(), "k2");
        assert!(MasterKeys::parse("").unwrap_err().contains("no key"));
        assert!(MasterKeys::parse("k1").unwrap_err().contains("<id>:"));
        assert!(MasterKeys::parse("k1:c2hvcnQ=")
            .unwrap_err()
            .contains("5 bytes"));
        assert!(MasterKeys::parse("k 1:c2hvcnQ=")
            .unwrap_err()
            .contains("id"));
        assert!(MasterKeys::parse(&format!("{a},{a}"))
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_master_and_binding() {
        let old = MasterKeys::parse(&MasterKeys::generate_text("k1")).unwrap();
        let key = [7u8; 32];
        let (id, wrapped) = old.wrap(&key, b"t\0s");
        assert_eq!(old.unwrap(&id, &wrapped, b"t\0s").unwrap(), key);
        assert!(old.unwrap(&id, &wrapped, b"t\0other").is_err());
        let rotated = MasterKeys::parse(&format!(
            "{},{}",
            MasterKeys::generate_text("k2"),
            // the old key, kept for unwrapping
            old_text(&old)
        ))
        .unwrap();
        assert_eq!(rotated.unwrap(&id, &wrapped, b"t\0s").unwrap(), key);
        let (new_id, _) = rotated.wrap(&key, b"t\0s");
        assert_eq!(new_id, "k2");
        let other = MasterKeys::parse(&MasterKeys::generate_text("k1")).unwrap();
        assert!(other.unwrap(&id, &wrapped, b"t\0s").is_err());
    }

    fn old_text(keys: &MasterKeys) -> String {
        let (id, key) = &keys.keys[0];
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }
}
