//! The vault on a real database: sealing, opening, erasure, restriction, rotation.

#![allow(clippy::unwrap_used)]

use callback_testkit::TestDb;
use callback_vault::{open_with, MasterKeys, Opened, Vault, VaultError};

async fn vault(db: &TestDb, keys: &str) -> Vault {
    callback_vault::migrator().run(&db.pool).await.unwrap();
    Vault::open(db.pool.clone(), MasterKeys::parse(keys).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn sealed_values_open_until_the_subject_is_erased_or_restricted() {
    let db = TestDb::new().await;
    let vault = vault(&db, &MasterKeys::generate_text("k1")).await;
    let key = vault.key_for_sealing("t", "s-1").await.unwrap();
    let sealed = key.seal("张三 13800138000");
    assert!(!sealed.contains("13800138000") && callback_vault::is_sealed(&sealed));
    assert_ne!(
        sealed,
        key.seal("张三 13800138000"),
        "a fresh nonce each time"
    );
    assert_eq!(
        vault.open_sealed("t", "s-1", &sealed).await.unwrap(),
        Opened::Clear("张三 13800138000".into())
    );
    // Bound to its subject: another subject's key does not open it.
    let other = vault.key_for_sealing("t", "s-2").await.unwrap();
    assert!(open_with(Some(&other), &sealed).is_err());

    let mut tx = db.pool.begin().await.unwrap();
    assert!(Vault::restrict_on(&mut tx, "t", "s-2").await.unwrap());
    assert!(Vault::erase_on(&mut tx, "t", "s-1").await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(
        vault.open_sealed("t", "s-1", &sealed).await.unwrap(),
        Opened::Erased
    );
    let restricted_value = other.seal("x");
    assert_eq!(
        vault
            .open_sealed("t", "s-2", &restricted_value)
            .await
            .unwrap(),
        Opened::Restricted
    );
    assert!(matches!(
        vault.key_for_sealing("t", "s-2").await,
        Err(VaultError::Restricted)
    ));
    // An erased subject's new data gets a new key; the old data stays unreadable.
    let fresh = vault.key_for_sealing("t", "s-1").await.unwrap();
    assert!(open_with(Some(&fresh), &sealed).is_err());
}

#[tokio::test]
async fn phone_keys_are_stable_and_survive_a_master_key_rotation() {
    let db = TestDb::new().await;
    let old = MasterKeys::generate_text("k1");
    let vault = vault(&db, &old).await;
    let phone = vault.phone_key("t", "+8613800138000");
    assert!(phone.starts_with("h1.") && !phone.contains("13800138000"));
    assert_ne!(phone, vault.phone_key("other-tenant", "+8613800138000"));
    let sealed = vault
        .key_for_sealing("t", "s-1")
        .await
        .unwrap()
        .seal("secret");

    let rotated = format!("{}\n{old}", MasterKeys::generate_text("k2"));
    let vault = Vault::open(db.pool.clone(), MasterKeys::parse(&rotated).unwrap())
        .await
        .unwrap();
    assert_eq!(vault.phone_key("t", "+8613800138000"), phone);
    assert_eq!(vault.rewrap_all().await.unwrap(), 2);
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT master_key_id FROM vault_subject_keys UNION ALL SELECT master_key_id FROM vault_hash_key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(ids.iter().all(|id| id == "k2"), "{ids:?}");
    // The old master key can go now.
    let only_new = rotated.lines().next().unwrap().to_owned();
    let vault = Vault::open(db.pool.clone(), MasterKeys::parse(&only_new).unwrap())
        .await
        .unwrap();
    assert_eq!(vault.phone_key("t", "+8613800138000"), phone);
    assert_eq!(
        vault.open_sealed("t", "s-1", &sealed).await.unwrap(),
        Opened::Clear("secret".into())
    );
}
