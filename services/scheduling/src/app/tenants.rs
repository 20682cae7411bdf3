//! Tenants and policies: publishing them, and the tenant cache every ingest and claim reads.

use super::*;

pub(super) async fn policies_for(
    conn: &mut PgConnection,
    tenant_id: &str,
    event_type: &str,
) -> Result<Vec<(Policy, u64)>> {
    let rows = sqlx::query(
        "SELECT policy, version FROM sched_policies WHERE tenant_id = $1 \
         AND (trigger_event_type = $2 OR $2 = ANY(cancel_on) OR $2 = ANY(reschedule_on)) ORDER BY policy_id",
    )
    .bind(tenant_id)
    .bind(event_type)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let policy: Policy = serde_json::from_value(row.try_get("policy")?)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            let version: i64 = row.try_get("version")?;
            Ok((policy, version as u64))
        })
        .collect()
}

impl Scheduling {
    #[tracing::instrument(name = "scheduling.publish_tenant", skip_all, fields(tenant_id))]
    pub async fn publish_tenant(&self, tenant_id: &str, settings_json: &str) -> Result<u64> {
        validate_id("tenant_id", tenant_id)?;
        let settings: TenantSettings =
            callback_rules::input::parse_document("settings_json", settings_json)
                .map_err(|(field, reason)| invalid(field, reason))?;
        validate_settings(&settings).map_err(|e| match e {
            crate::domain::SettingsError::Calendar(c) => invalid("settings_json", c.to_string()),
            crate::domain::SettingsError::Invalid { field, reason } => {
                invalid(format!("settings_json.{field}"), reason)
            }
        })?;
        let published = TenantPublished {
            tenant_id: tenant_id.to_owned(),
            settings,
        };
        let mut tx = self.store.begin().await?;
        let result = self
            .store
            .append_in(
                &mut tx,
                &tenant_stream(tenant_id)?,
                ExpectedVersion::Any,
                &[new_event(&published, tenant_id)?],
            )
            .await?;
        project_tenant(&mut tx, &published, result.stream_version).await?;
        self.store.commit(tx).await?;
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant_id);
        tracing::info!(version = result.stream_version, "tenant settings published");
        Ok(result.stream_version)
    }

    /// Drops a tenant's cached settings (another instance published them).
    pub fn forget_tenant(&self, tenant_id: &str) {
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant_id);
    }

    pub(super) async fn tenant(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
    ) -> Result<(Arc<TenantSettings>, Arc<Calendar>)> {
        if let Some(cached) = self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant_id)
            .filter(|c| c.loaded.elapsed() < TENANT_CACHE_TTL)
        {
            return Ok((cached.settings.clone(), cached.calendar.clone()));
        }
        let row = sqlx::query("SELECT settings FROM sched_tenants WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(conn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant `{tenant_id}`")))?;
        let settings: TenantSettings = serde_json::from_value(row.try_get("settings")?)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let calendar = validate_settings(&settings).map_err(|e| Error::Corrupt(e.to_string()))?;
        let cached = CachedTenant {
            loaded: std::time::Instant::now(),
            settings: Arc::new(settings),
            calendar: Arc::new(calendar),
        };
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant_id.to_owned(), cached.clone());
        Ok((cached.settings, cached.calendar))
    }

    #[tracing::instrument(name = "scheduling.publish_policy", skip_all, fields(tenant_id))]
    pub async fn publish_policy(
        &self,
        tenant_id: &str,
        policy_json: &str,
    ) -> Result<(String, u64)> {
        validate_id("tenant_id", tenant_id)?;
        let policy: Policy = callback_rules::input::parse_document("policy_json", policy_json)
            .map_err(|(field, reason)| invalid(field, reason))?;
        policy
            .validate()
            .map_err(|e| invalid(format!("policy_json.{}", e.field), e.reason))?;
        let mut tx = self.store.begin().await?;
        self.tenant(&mut tx, tenant_id).await?;
        let published = PolicyPublished {
            tenant_id: tenant_id.to_owned(),
            policy: serde_json::to_value(&policy).map_err(|e| Error::Corrupt(e.to_string()))?,
        };
        let result = self
            .store
            .append_in(
                &mut tx,
                &policy_stream(tenant_id, &policy.policy_id)?,
                ExpectedVersion::Any,
                &[new_event(&published, tenant_id)?],
            )
            .await?;
        project_policy(&mut tx, tenant_id, &policy, result.stream_version).await?;
        self.store.commit(tx).await?;
        tracing::info!(policy_id = %policy.policy_id, version = result.stream_version, "policy published");
        Ok((policy.policy_id, result.stream_version))
    }
}
