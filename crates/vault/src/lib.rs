//! Personal data sealed per subject ("crypto-shredding"): every name, phone number, note and
//! free-text answer a service writes into the event log or a read model is encrypted with its
//! subject's own key (XChaCha20-Poly1305, bound to tenant and subject). Subject keys live in
//! `vault_subject_keys`, outside the append-only log, wrapped by a master key from
//! configuration. Erasing a subject deletes its key: what was sealed with it, in the log, the
//! read models and their backups, can never be read again, while the log is never rewritten.
//! Restricting keeps the key but nothing opens with it.
//!
//! Phone numbers are matched (do-not-call, frequency caps, shared contacts, repeat
//! complainants) by a keyed hash of the normalised number ([`Vault::phone_key`]), never by
//! the clear text; the hash key is stored wrapped like a subject key, so it survives master
//! key rotations.

mod master;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::Mac;
use sqlx::PgPool;

pub use master::{MasterKeys, MASTER_KEY_BYTES};

/// Migrations of the key tables, embedded in every binary (version range 900-999).
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// What a sealed value starts with.
const SEALED_PREFIX: &str = "pii1.";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The subject's processing is restricted: nothing new is sealed or opened for it.
    #[error("the subject's processing is restricted")]
    Restricted,
    /// A key wrapped by a master key the configuration does not have.
    #[error("subject key wrapped by master key `{0}`, which is not configured")]
    UnknownMasterKey(String),
    /// Stored data that does not decrypt: tampered, or sealed for another subject.
    #[error("sealed data does not open: {0}")]
    Corrupt(String),
}

/// A value as a reader gets it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened<T> {
    Clear(T),
    /// The subject was erased: its key is gone.
    Erased,
    /// The subject's processing is restricted.
    Restricted,
}

impl<T> Opened<T> {
    pub fn clear(self) -> Option<T> {
        match self {
            Opened::Clear(value) => Some(value),
            _ => None,
        }
    }
}

/// What a reader sees in place of an erased subject's personal data.
pub const ERASED: &str = "[erased]";
/// ... and of a restricted subject's.
pub const RESTRICTED: &str = "[restricted]";

impl Opened<String> {
    /// The text, or the marker a reader sees in its place.
    pub fn or_marker(self) -> String {
        match self {
            Opened::Clear(text) => text,
            Opened::Restricted => RESTRICTED.to_owned(),
            Opened::Erased => ERASED.to_owned(),
        }
    }
}

/// A stored text as a reader sees it: clear text (written before sealing) as it is, sealed
/// text opened with `key`, or the marker when the subject is erased or restricted (or the
/// text does not open with the key).
pub fn open_for_reader(key: Option<&SubjectKey>, text: &str) -> String {
    if !is_sealed(text) {
        return text.to_owned();
    }
    open_with(key, text)
        .map(Opened::or_marker)
        .unwrap_or_else(|_| ERASED.to_owned())
}

/// The key store.
#[derive(Clone)]
pub struct Vault {
    pool: PgPool,
    master: Arc<MasterKeys>,
    hash_key: Arc<[u8; 32]>,
}

/// A subject's key, unwrapped, for a batch of seals or opens.
#[derive(Clone)]
pub struct SubjectKey {
    tenant_id: String,
    subject_id: String,
    key: [u8; 32],
    restricted: bool,
}

impl Vault {
    /// Opens the vault on a migrated database, creating the hash key on first use.
    pub async fn open(pool: PgPool, master: MasterKeys) -> Result<Vault, VaultError> {
        let master = Arc::new(master);
        let existing: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT master_key_id, wrapped FROM vault_hash_key WHERE id = 1")
                .fetch_optional(&pool)
                .await?;
        let hash_key = match existing {
            Some((id, wrapped)) => master.unwrap(&id, &wrapped, b"hash-key")?,
            None => {
                let fresh = random_key();
                let (id, wrapped) = master.wrap(&fresh, b"hash-key");
                sqlx::query(
                    "INSERT INTO vault_hash_key (id, master_key_id, wrapped) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(wrapped)
                .execute(&pool)
                .await?;
                // Another process may have won the race: read what is stored.
                let (id, wrapped): (String, Vec<u8>) = sqlx::query_as(
                    "SELECT master_key_id, wrapped FROM vault_hash_key WHERE id = 1",
                )
                .fetch_one(&pool)
                .await?;
                master.unwrap(&id, &wrapped, b"hash-key")?
            }
        };
        Ok(Vault {
            pool,
            master,
            hash_key: Arc::new(hash_key),
        })
    }

    /// A vault under a master key that lives in this process only (the same for every vault
    /// the process opens, so an application reopened on its database reads its data), on a
    /// database it migrates: for tests, demos and benchmarks, whose data need not outlive them.
    pub async fn with_fresh_master_key(pool: PgPool) -> Result<Vault, VaultError> {
        static PROCESS_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        migrator()
            .run(&pool)
            .await
            .map_err(|e| VaultError::Database(e.into()))?;
        let text = PROCESS_KEY.get_or_init(|| MasterKeys::generate_text("ephemeral"));
        let keys = MasterKeys::parse(text).map_err(VaultError::Corrupt)?;
        Vault::open(pool, keys).await
    }

    /// The keyed hash a normalised phone number is matched by in `tenant`: `"h1."` and 32 hex
    /// digits. The same number gives the same key in every service of the installation.
    pub fn phone_key(&self, tenant_id: &str, normalized_phone: &str) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.hash_key[..])
            .expect("HMAC takes any key length");
        mac.update(tenant_id.as_bytes());
        mac.update(&[0]);
        mac.update(normalized_phone.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("h1.{hex}")
    }

    /// The subject's key, created when it has none. Restricted subjects get
    /// [`VaultError::Restricted`]: nothing new is sealed for them.
    pub async fn key_for_sealing(
        &self,
        tenant_id: &str,
        subject_id: &str,
    ) -> Result<SubjectKey, VaultError> {
        let mut conn = self.pool.acquire().await?;
        self.key_for_sealing_on(&mut conn, tenant_id, subject_id)
            .await
    }

    /// Like [`Vault::key_for_sealing`], on the caller's connection (in its transaction, so a
    /// key created for data that is then not written goes with it). One round trip.
    pub async fn key_for_sealing_on(
        &self,
        conn: &mut sqlx::PgConnection,
        tenant_id: &str,
        subject_id: &str,
    ) -> Result<SubjectKey, VaultError> {
        let fresh = random_key();
        let (master_id, wrapped) = self.master.wrap(&fresh, &binding(tenant_id, subject_id));
        // The statement's snapshot does not see its own insert: a new key comes from the
        // insert, an existing one from the table.
        let (id, wrapped, restricted): (String, Vec<u8>, bool) = sqlx::query_as(
            "WITH inserted AS ( \
               INSERT INTO vault_subject_keys (tenant_id, subject_id, master_key_id, wrapped) \
               VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, subject_id) DO NOTHING \
               RETURNING master_key_id, wrapped, restricted) \
             SELECT master_key_id, wrapped, restricted FROM inserted \
             UNION ALL \
             SELECT master_key_id, wrapped, restricted FROM vault_subject_keys \
             WHERE tenant_id = $1 AND subject_id = $2 \
             LIMIT 1",
        )
        .bind(tenant_id)
        .bind(subject_id)
        .bind(master_id)
        .bind(wrapped)
        .fetch_one(&mut *conn)
        .await?;
        if restricted {
            return Err(VaultError::Restricted);
        }
        self.unwrap(tenant_id, subject_id, &id, &wrapped, restricted)
    }

    /// The keys of many subjects at once, created where missing, in one statement on the
    /// caller's connection: `None` for a restricted subject (nothing is sealed for it).
    pub async fn keys_for_sealing_on(
        &self,
        conn: &mut sqlx::PgConnection,
        subjects: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), Option<SubjectKey>>, VaultError> {
        let mut wanted: Vec<(&str, &str)> = subjects.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut tenants = Vec::with_capacity(wanted.len());
        let mut ids = Vec::with_capacity(wanted.len());
        let mut masters = Vec::with_capacity(wanted.len());
        let mut wraps = Vec::with_capacity(wanted.len());
        for (tenant_id, subject_id) in &wanted {
            let (master_id, wrapped) = self
                .master
                .wrap(&random_key(), &binding(tenant_id, subject_id));
            tenants.push(*tenant_id);
            ids.push(*subject_id);
            masters.push(master_id);
            wraps.push(wrapped);
        }
        let rows: Vec<(String, String, String, Vec<u8>, bool)> = sqlx::query_as(
            // A primary-key lookup per subject (`OFFSET 0`: never flattened into a hash join
            // over the whole key table, which a generic plan chose).
            "WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
                             AS w(t, s, m, k)), \
             inserted AS ( \
               INSERT INTO vault_subject_keys (tenant_id, subject_id, master_key_id, wrapped) \
               SELECT t, s, m, k FROM wanted ON CONFLICT (tenant_id, subject_id) DO NOTHING \
               RETURNING tenant_id, subject_id, master_key_id, wrapped, restricted) \
             SELECT tenant_id, subject_id, master_key_id, wrapped, restricted FROM inserted \
             UNION ALL \
             SELECT v.tenant_id, v.subject_id, v.master_key_id, v.wrapped, v.restricted \
             FROM wanted w CROSS JOIN LATERAL ( \
               SELECT * FROM vault_subject_keys k WHERE k.tenant_id = w.t AND k.subject_id = w.s \
               OFFSET 0) v",
        )
        .bind(&tenants)
        .bind(&ids)
        .bind(&masters)
        .bind(&wraps)
        .fetch_all(&mut *conn)
        .await?;
        let mut keys = HashMap::with_capacity(rows.len());
        for (tenant_id, subject_id, master_id, wrapped, restricted) in rows {
            let key = if restricted {
                None
            } else {
                Some(self.unwrap(&tenant_id, &subject_id, &master_id, &wrapped, false)?)
            };
            keys.insert((tenant_id, subject_id), key);
        }
        Ok(keys)
    }

    /// The subject's key if it has one (erased subjects have none).
    pub async fn existing_key(
        &self,
        tenant_id: &str,
        subject_id: &str,
    ) -> Result<Option<SubjectKey>, VaultError> {
        let row: Option<(String, Vec<u8>, bool)> = sqlx::query_as(
            "SELECT master_key_id, wrapped, restricted FROM vault_subject_keys \
             WHERE tenant_id = $1 AND subject_id = $2",
        )
        .bind(tenant_id)
        .bind(subject_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(id, wrapped, restricted)| {
            self.unwrap(tenant_id, subject_id, &id, &wrapped, restricted)
        })
        .transpose()
    }

    /// A key read by the caller's own query (a join with `vault_subject_keys`).
    pub fn unwrap(
        &self,
        tenant_id: &str,
        subject_id: &str,
        master_key_id: &str,
        wrapped: &[u8],
        restricted: bool,
    ) -> Result<SubjectKey, VaultError> {
        let key = self
            .master
            .unwrap(master_key_id, wrapped, &binding(tenant_id, subject_id))?;
        Ok(SubjectKey {
            tenant_id: tenant_id.to_owned(),
            subject_id: subject_id.to_owned(),
            key,
            restricted,
        })
    }

    /// Opens `sealed` with the subject's key as stored now.
    pub async fn open_sealed(
        &self,
        tenant_id: &str,
        subject_id: &str,
        sealed: &str,
    ) -> Result<Opened<String>, VaultError> {
        let key = self.existing_key(tenant_id, subject_id).await?;
        open_with(key.as_ref(), sealed)
    }

    /// Deletes the subject's key (erasure) in the caller's transaction, beside the event that
    /// records it. Returns whether there was a key.
    pub async fn erase_on(
        tx: &mut sqlx::PgConnection,
        tenant_id: &str,
        subject_id: &str,
    ) -> Result<bool, VaultError> {
        let deleted =
            sqlx::query("DELETE FROM vault_subject_keys WHERE tenant_id = $1 AND subject_id = $2")
                .bind(tenant_id)
                .bind(subject_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        Ok(deleted > 0)
    }

    /// Marks the subject's key restricted in the caller's transaction. Returns whether there
    /// was a key.
    pub async fn restrict_on(
        tx: &mut sqlx::PgConnection,
        tenant_id: &str,
        subject_id: &str,
    ) -> Result<bool, VaultError> {
        let updated = sqlx::query(
            "UPDATE vault_subject_keys SET restricted = true WHERE tenant_id = $1 AND subject_id = $2",
        )
        .bind(tenant_id)
        .bind(subject_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Rewraps every key wrapped by an older master key with the current one (after adding a
    /// new master key in front of the old one in the configuration). Returns how many.
    pub async fn rewrap_all(&self) -> Result<u64, VaultError> {
        let current = self.master.current_id().to_owned();
        let rows: Vec<(String, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT tenant_id, subject_id, master_key_id, wrapped FROM vault_subject_keys \
             WHERE master_key_id <> $1",
        )
        .bind(&current)
        .fetch_all(&self.pool)
        .await?;
        let mut count = 0;
        for (tenant_id, subject_id, id, wrapped) in rows {
            let aad = binding(&tenant_id, &subject_id);
            let key = self.master.unwrap(&id, &wrapped, &aad)?;
            let (new_id, new_wrapped) = self.master.wrap(&key, &aad);
            count += sqlx::query(
                "UPDATE vault_subject_keys SET master_key_id = $3, wrapped = $4 \
                 WHERE tenant_id = $1 AND subject_id = $2 AND master_key_id = $5",
            )
            .bind(&tenant_id)
            .bind(&subject_id)
            .bind(new_id)
            .bind(new_wrapped)
            .bind(&id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        let hash: (String, Vec<u8>) =
            sqlx::query_as("SELECT master_key_id, wrapped FROM vault_hash_key WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        if hash.0 != current {
            let key = self.master.unwrap(&hash.0, &hash.1, b"hash-key")?;
            let (id, wrapped) = self.master.wrap(&key, b"hash-key");
            sqlx::query("UPDATE vault_hash_key SET master_key_id = $1, wrapped = $2 WHERE id = 1")
                .bind(id)
                .bind(wrapped)
                .execute(&self.pool)
                .await?;
            count += 1;
        }
        Ok(count)
    }
}

impl SubjectKey {
    /// Seals `clear` for this subject: `pii1.` and the nonce and ciphertext, base64url.
    pub fn seal(&self, clear: &str) -> String {
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.key));
        let mut nonce = [0u8; 24];
        fill_random(&mut nonce);
        let aad = binding(&self.tenant_id, &self.subject_id);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: clear.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length a request can carry");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Seals a value as JSON.
    pub fn seal_json<T: serde::Serialize>(&self, value: &T) -> String {
        self.seal(&serde_json::to_string(value).unwrap_or_default())
    }

    pub fn is_restricted(&self) -> bool {
        self.restricted
    }
}

/// Opens `sealed` with `key` (`None`: the subject was erased).
pub fn open_with(key: Option<&SubjectKey>, sealed: &str) -> Result<Opened<String>, VaultError> {
    let Some(key) = key else {
        return Ok(Opened::Erased);
    };
    if key.restricted {
        return Ok(Opened::Restricted);
    }
    let body = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or_else(|| VaultError::Corrupt("not a sealed value".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| VaultError::Corrupt("not base64".into()))?;
    if bytes.len() < 24 {
        return Err(VaultError::Corrupt("too short".into()));
    }
    let (nonce, ciphertext) = bytes.split_at(24);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.key));
    let aad = binding(&key.tenant_id, &key.subject_id);
    let clear = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| VaultError::Corrupt("authentication failed".into()))?;
    String::from_utf8(clear)
        .map(Opened::Clear)
        .map_err(|_| VaultError::Corrupt("not UTF-8".into()))
}

/// Opens a value sealed with [`SubjectKey::seal_json`].
pub fn open_json<T: serde::de::DeserializeOwned>(
    key: Option<&SubjectKey>,
    sealed: &str,
) -> Result<Opened<T>, VaultError> {
    Ok(match open_with(key, sealed)? {
        Opened::Clear(text) => Opened::Clear(
            serde_json::from_str(&text).map_err(|e| VaultError::Corrupt(e.to_string()))?,
        ),
        Opened::Erased => Opened::Erased,
        Opened::Restricted => Opened::Restricted,
    })
}

/// Whether `text` is a sealed value.
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

/// What a subject's key and its sealed values are bound to.
fn binding(tenant_id: &str, subject_id: &str) -> Vec<u8> {
    let mut aad = tenant_id.as_bytes().to_vec();
    aad.push(0);
    aad.extend_from_slice(subject_id.as_bytes());
    aad
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    fill_random(&mut key);
    key
}

fn fill_random(buffer: &mut [u8]) {
    getrandom::getrandom(buffer).expect("the operating system's random source");
}
