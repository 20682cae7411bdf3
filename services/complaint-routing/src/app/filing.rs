//! Filing a complaint: validation, idempotency on the intake, classification and routing with
//! the log's context (repeat complainant, group), and the group upgrade of earlier members.

use super::*;

pub(super) fn validate_intake(intake: &Intake) -> Result<()> {
    validate_id("tenant_id", &intake.tenant_id)?;
    validate_id("source", &intake.source)?;
    if intake.source_id.is_empty() || intake.source_id.len() > 128 {
        return Err(invalid("source_id", "must be 1-128 characters"));
    }
    if intake.channel != CALLBACK_CHANNEL && !FILING_CHANNELS.contains(&intake.channel.as_str()) {
        return Err(invalid(
            "channel",
            format!("must be one of {}", FILING_CHANNELS.join(", ")),
        ));
    }
    // A complaint may come without a customer id: anonymous, or known only by a number.
    let customer = &intake.customer.customer_id;
    if customer.len() > 128 || (!customer.is_empty() && customer.trim().is_empty()) {
        return Err(invalid(
            "customer.customer_id",
            "must be empty (anonymous) or 1-128 characters",
        ));
    }
    if intake.customer.name.chars().count() > 200 {
        return Err(invalid("customer.name", "is longer than 200 characters"));
    }
    // The rule every service shares: numbers are matched in their normal form (E.164).
    for (i, phone) in intake.customer.phones.iter().enumerate() {
        // Read in the tenant's region once its rules are loaded (`file_in`).
        if let Some(reason) = callback_rules::ids::phone_problem(phone) {
            return Err(invalid(format!("customer.phones[{i}]"), reason));
        }
    }
    if intake.text.trim().is_empty() {
        return Err(invalid("text", "must not be empty"));
    }
    if intake.text.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(
            "text",
            format!("is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    for (field, value) in [("category", &intake.category), ("topic", &intake.topic)] {
        if value.chars().count() > 200 {
            return Err(invalid(field, "is longer than 200 characters"));
        }
    }
    for (i, hint) in intake.severity_hints.iter().enumerate() {
        if !domain::rules::SEVERITY_HINTS.contains(&hint.as_str()) {
            return Err(invalid(
                format!("severity_hints[{i}]"),
                format!(
                    "unknown hint `{hint}` (use {})",
                    domain::rules::SEVERITY_HINTS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl ComplaintRouting {
    /// Files a complaint; idempotent on (tenant, source, source id).
    #[tracing::instrument(name = "complaints.file", skip_all, fields(tenant_id = %intake.tenant_id, channel = %intake.channel))]
    pub async fn file(&self, intake: Intake) -> Result<Filing> {
        validate_intake(&intake)?;
        let id = complaint_id(&intake.tenant_id, &intake.source, &intake.source_id);
        if let Some(mut existing) = self.existing(id).await? {
            existing.complaint = self.opened(existing.complaint).await?;
            return same_filing(existing, &intake);
        }
        let mut tx = self.store.begin().await?;
        match self.file_in(&mut tx, &intake).await {
            Ok(filing) => {
                self.store.commit(tx).await?;
                Ok(filing)
            }
            Err(Error::Store(callback_eventstore::Error::VersionConflict { .. })) => {
                // A concurrent retry of the same filing won; answer as it did.
                drop(tx);
                let existing = self
                    .existing(id)
                    .await?
                    .ok_or_else(|| corrupt("filing conflict without a recorded complaint"))?;
                same_filing(existing, &intake)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn existing(&self, id: Uuid) -> Result<Option<Filing>> {
        let mut conn = self.store.pool().acquire().await?;
        Ok(self
            .load(&mut conn, id, false)
            .await?
            .map(|(complaint, _)| Filing {
                duplicate: true,
                complaint,
            }))
    }

    /// Files within the caller's transaction (the feed consumer's, with its checkpoint).
    /// Returns a duplicate filing when the complaint exists.
    pub async fn file_in(&self, conn: &mut PgConnection, intake: &Intake) -> Result<Filing> {
        validate_intake(intake)?;
        let id = complaint_id(&intake.tenant_id, &intake.source, &intake.source_id);
        if let Some((complaint, _)) = self.load(conn, id, false).await? {
            return same_filing(
                Filing {
                    duplicate: true,
                    complaint: self.opened(complaint).await?,
                },
                intake,
            );
        }
        let now = self.now();
        let rules = self.latest_rules(conn, &intake.tenant_id).await?;
        let intake = &with_normal_phones(intake.clone(), rules.rules.phone_region())?;
        let rule = &rules.rules;
        let topic = domain::group_topic(intake);
        let opinion = rule
            .place(&domain::rules::ComplaintFacts {
                category: &intake.category,
                text: &intake.text,
                severity_hints: &intake.severity_hints,
            })
            .route
            .class
            .is_opinion();
        // One filing at a time per topic, so the fifth customer is counted exactly once.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "complaint-group\n{}\n{topic}\n{opinion}",
                intake.tenant_id
            ))
            .execute(&mut *conn)
            .await?;
        let window_start = now - Duration::hours(i64::from(rule.group.window_hours));
        let others: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT CASE WHEN customer_id <> '' THEN customer_id ELSE complaint_id::text END) \
             FROM cr_complaints WHERE tenant_id = $1 AND topic = $2 \
             AND opinion = $3 AND filed_at > $4 AND NOT (customer_id <> '' AND customer_id = $5)",
        )
        .bind(&intake.tenant_id)
        .bind(&topic)
        .bind(opinion)
        .bind(window_start)
        .bind(&intake.customer.customer_id)
        .fetch_one(&mut *conn)
        .await?;
        let previous_complaint: Option<Uuid> = sqlx::query_scalar(
            "SELECT complaint_id FROM cr_complaints WHERE tenant_id = $1 \
             AND ((customer_id <> '' AND customer_id = $2) OR phones && $4) \
             AND filed_at > $3 ORDER BY filed_at DESC LIMIT 1",
        )
        .bind(&intake.tenant_id)
        .bind(&intake.customer.customer_id)
        .bind(now - Duration::days(i64::from(rule.repeat_window_days)))
        .bind(self.phone_keys(intake))
        .fetch_optional(&mut *conn)
        .await?;
        let context = Context {
            previous_complaint,
            group_customers: u32::try_from(others + 1).unwrap_or(u32::MAX),
        };
        // Decided on the clear intake; written with its personal data sealed.
        let sealed = self.seal_intake(conn, intake, id).await?;
        let mut events = domain::file(id, intake, rule, rules.version, &context, now);
        for event in &mut events {
            if let ComplaintEvent::ComplaintFiled(filed) = event {
                filed.customer = sealed.customer.clone();
                filed.text = sealed.text.clone();
            }
        }
        let state = fold(None, &events, &rules.calendar)?;
        self.save(
            conn,
            None,
            &state,
            &events,
            &rules,
            "system:complaint-routing",
        )
        .await?;
        if context.group_customers >= rule.group.min_customers {
            self.upgrade_group(conn, &state, &rules, context.group_customers, window_start)
                .await?;
        }
        tracing::info!(class = state.class.as_str(), "complaint filed");
        // The caller gets the clear filing it sent (its key is not committed yet).
        let mut state = state;
        state.filed.customer = intake.customer.clone();
        state.filed.text = intake.text.clone();
        Ok(Filing {
            duplicate: false,
            complaint: Complaint {
                state,
                calendar: rules,
            },
        })
    }

    /// The group rule: every open complaint on the topic that is not yet in the group class
    /// is re-classified and re-routed, each with an event saying why.
    pub(super) async fn upgrade_group(
        &self,
        conn: &mut PgConnection,
        newest: &ComplaintState,
        latest: &Arc<Rules>,
        customers: u32,
        window_start: DateTime<Utc>,
    ) -> Result<()> {
        let single_class = if newest.class.is_opinion() { "E" } else { "C" };
        let members: Vec<Uuid> = sqlx::query_scalar(
            "SELECT complaint_id FROM cr_complaints WHERE tenant_id = $1 AND topic = $2 AND opinion = $3 \
             AND filed_at > $4 AND class = $5 AND status IN ('open', 'in_progress', 'waiting_on_customer') \
             ORDER BY filed_at, complaint_id",
        )
        .bind(&newest.filed.tenant_id)
        .bind(&newest.filed.topic)
        .bind(newest.class.is_opinion())
        .bind(window_start)
        .bind(single_class)
        .fetch_all(&mut *conn)
        .await?;
        let now = self.now();
        for member in members {
            let Some((complaint, version)) = self.load(conn, member, true).await? else {
                continue;
            };
            let calendar = complaint.calendar.clone();
            let (state, mut events) =
                complaint
                    .state
                    .fire_timers(&latest.rules, &calendar.calendar, now);
            let upgrade = state.join_group(&latest.rules, customers, now);
            let state = fold(Some(state), &upgrade, &calendar.calendar)?;
            events.extend(upgrade);
            self.save(
                conn,
                Some(version),
                &state,
                &events,
                &calendar,
                "system:complaint-routing",
            )
            .await?;
        }
        Ok(())
    }
}

/// A filing found under the intake's source id, when the intake is a retry of it. The same
/// source id with another complaint (another customer, channel, category or text) is a
/// conflict, refused naming the key: answering it as a retry would lose a complaint.
fn same_filing(existing: Filing, intake: &Intake) -> Result<Filing> {
    let filed = &existing.complaint.state.filed;
    let differs: Vec<&str> = [
        (
            "customer",
            filed.customer.customer_id != intake.customer.customer_id,
        ),
        ("channel", filed.channel != intake.channel),
        ("category", filed.category != intake.category),
        ("text", filed.text != intake.text),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(name, _)| name)
    .collect();
    if differs.is_empty() {
        Ok(existing)
    } else {
        Err(Error::KeyReused {
            field: "source_id".into(),
            reason: format!(
                "was already filed from this source with another {}; a retry must repeat the \
                 complaint as first sent",
                differs.join(", ")
            ),
        })
    }
}

/// The intake with its numbers in E.164, read in the tenant's region, so a complainant is
/// recognised by number however it was written; or the number that is not one.
fn with_normal_phones(mut intake: Intake, region: &str) -> Result<Intake> {
    for (i, phone) in intake.customer.phones.iter_mut().enumerate() {
        *phone = callback_rules::phone::normalize(phone, region)
            .map_err(|reason| invalid(format!("customer.phones[{i}]"), reason))?;
    }
    Ok(intake)
}
