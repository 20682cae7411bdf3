//! `callbackd migrate` as a deployment's migration job runs it: as the owner, granting the
//! services' role, then exiting; run twice it changes nothing.

#![allow(clippy::unwrap_used)]

use callback_testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_every_service_table_and_grants_the_service_role() {
    let db = TestDb::new().await;
    let role = format!("cbt_migrate_{}", std::process::id());
    sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE ROLE {role} LOGIN PASSWORD 'x'"))
        .execute(&db.pool)
        .await
        .unwrap();
    let owner_url = db.url();
    let service_url = {
        let (scheme, rest) = owner_url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{role}:x@{host}")
    };
    for run in 0..2 {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_callbackd"))
            .arg("migrate")
            .env("DATABASE_URL", &service_url)
            .env("CALLBACK_MIGRATION_DATABASE_URL", &owner_url)
            .env(
                "CALLBACK_MASTER_KEY",
                callback_vault::MasterKeys::generate_text("t"),
            )
            .env("CALLBACK_TLS", "off")
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "run {run}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for kind in [
            "scheduling",
            "call-logging",
            "complaint-routing",
            "analytics",
            "integration-gateway",
        ] {
            assert!(stdout.contains(&format!("migrated {kind}")), "{stdout}");
        }
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
         AND tablename IN ('events', 'sched_callbacks', 'ig_deliveries', 'an_callbacks') ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        ["an_callbacks", "events", "ig_deliveries", "sched_callbacks"]
    );
    let (may_insert, may_delete): (bool, bool) = sqlx::query_as(
        "SELECT has_table_privilege($1, 'events', 'INSERT'), has_table_privilege($1, 'events', 'DELETE')",
    )
    .bind(&role)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        may_insert && !may_delete,
        "the service role appends, never deletes"
    );
    assert!(sqlx::query_scalar::<_, bool>(
        "SELECT has_table_privilege($1, 'ig_deliveries', 'UPDATE')"
    )
    .bind(&role)
    .fetch_one(&db.pool)
    .await
    .unwrap());
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
    db.pool.close().await;
}
