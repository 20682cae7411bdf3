//! Routing rules: publishing them (and filing the complaints parked until then), and the
//! parsed versions every filing and timer reads.

use super::*;

impl ComplaintRouting {
    #[tracing::instrument(name = "complaints.publish_rules", skip_all, fields(tenant_id))]
    pub async fn publish_rules(&self, tenant_id: &str, rules_json: &str) -> Result<u64> {
        validate_id("tenant_id", tenant_id)?;
        let (rules, _) = RoutingRules::parse(rules_json).map_err(|e| {
            let field = if e.field == "rules_json" {
                e.field
            } else {
                format!("rules_json.{}", e.field)
            };
            invalid(field, e.reason)
        })?;
        let published = RoutingRulesPublished {
            tenant_id: tenant_id.to_owned(),
            rules: serde_json::to_value(&rules).map_err(corrupt)?,
        };
        let mut tx = self.store.begin().await?;
        let event = new_event(&published, tenant_id, "api:publish_rules")?;
        let result = self
            .store
            .append_in(
                &mut tx,
                &rules_stream(tenant_id)?,
                ExpectedVersion::Any,
                &[event],
            )
            .await?;
        project_rules(&mut tx, tenant_id, &rules, result.stream_version).await?;
        self.store.commit(tx).await?;
        tracing::info!(version = result.stream_version, "routing rules published");
        self.file_parked(tenant_id).await;
        Ok(result.stream_version)
    }

    /// Keeps a complaint that arrived from a feed before its tenant had routing rules, in the
    /// log (`complaint_intake-<tenant>`), to be filed when rules are published. Idempotent: the
    /// event id is derived from the complaint's id.
    pub async fn park_in(
        &self,
        conn: &mut PgConnection,
        intake: &Intake,
        reason: &str,
    ) -> Result<()> {
        let id = complaint_id(&intake.tenant_id, &intake.source, &intake.source_id);
        let parked = ComplaintParked {
            intake: self.seal_intake(conn, intake, id).await?,
            reason: reason.to_owned(),
            at: self.now(),
        };
        let event = new_event(&parked, &intake.tenant_id, "system:complaint-routing")?.with_id(
            Uuid::new_v5(&COMPLAINT_NAMESPACE, format!("parked\n{id}").as_bytes()),
        );
        self.store
            .append_in(
                conn,
                &intake_stream(&intake.tenant_id)?,
                ExpectedVersion::Any,
                &[event],
            )
            .await?;
        tracing::warn!(tenant_id = %intake.tenant_id, "complaint parked until the tenant has routing rules");
        Ok(())
    }

    /// Files every parked complaint of the tenant (filing is idempotent, so one filed before
    /// is not filed twice). Failures are logged; the next publish tries again.
    pub(super) async fn file_parked(&self, tenant_id: &str) {
        let parked = match intake_stream(tenant_id) {
            Ok(stream) => self
                .store
                .read_stream(&stream, 1)
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        let parked = match parked {
            Ok(parked) => parked,
            Err(error) => {
                tracing::warn!(%error, "parked complaints not read");
                return;
            }
        };
        for event in parked {
            let intake = callback_kit::events::decode::<ComplaintParked>(&event)
                .ok()
                .map(|parked| parked.intake);
            let Some(mut intake) = intake else {
                tracing::error!(event_id = %event.event_id, "undecodable parked complaint skipped");
                continue;
            };
            let id = complaint_id(&intake.tenant_id, &intake.source, &intake.source_id);
            let tenant_id = intake.tenant_id.clone();
            if let Err(error) = self
                .open_personal(&tenant_id, id, &mut intake.customer, &mut intake.text)
                .await
            {
                tracing::warn!(%error, "parked complaint not opened");
                continue;
            }
            if let Err(error) = self.file(intake).await {
                tracing::warn!(%error, "parked complaint not filed");
            }
        }
    }

    pub(super) async fn rules_version(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
        version: u64,
    ) -> Result<Arc<Rules>> {
        let key = (tenant_id.to_owned(), version);
        if let Some(rules) = self
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(rules.clone());
        }
        let value: Value =
            sqlx::query_scalar("SELECT rules FROM cr_rules WHERE tenant_id = $1 AND version = $2")
                .bind(tenant_id)
                .bind(version as i64)
                .fetch_optional(conn)
                .await?
                .ok_or_else(|| corrupt(format!("rules version {version} of a tenant missing")))?;
        let rules: RoutingRules = serde_json::from_value(value).map_err(corrupt)?;
        let calendar = rules.validate().map_err(corrupt)?;
        let loaded = Arc::new(Rules {
            version,
            rules,
            calendar,
        });
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, loaded.clone());
        Ok(loaded)
    }

    pub(super) async fn latest_rules(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
    ) -> Result<Arc<Rules>> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM cr_rules WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&mut *conn)
                .await?;
        match version {
            Some(v) => self.rules_version(conn, tenant_id, v as u64).await,
            None => Err(Error::FailedPrecondition(format!(
                "tenant `{tenant_id}` has no routing rules; publish them first"
            ))),
        }
    }
}
