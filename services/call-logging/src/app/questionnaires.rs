//! Questionnaires (versioned scripts) and the tenant's own dispositions.

use super::*;

impl CallLogging {
    pub(super) fn questionnaire_stream(
        tenant_id: &str,
        questionnaire_id: &str,
    ) -> Result<StreamName, Error> {
        StreamName::new(
            QuestionnairePublished::CATEGORY,
            format!("{tenant_id}:{questionnaire_id}"),
        )
        .map_err(Error::from)
    }

    #[tracing::instrument(
        name = "call_logging.publish_questionnaire",
        skip_all,
        fields(tenant_id)
    )]
    pub async fn publish_questionnaire(
        &self,
        tenant_id: &str,
        json: &str,
    ) -> Result<(String, u64), Error> {
        if tenant_id.is_empty() || tenant_id.len() > 64 {
            return Err(invalid("tenant_id", "must be 1-64 characters"));
        }
        let questionnaire: Questionnaire =
            callback_rules::input::parse_document("questionnaire_json", json)
                .map_err(|(field, reason)| invalid(&field, reason))?;
        questionnaire
            .validate()
            .map_err(|e| invalid(&format!("questionnaire_json.{}", e.field), e.reason))?;
        let published = QuestionnairePublished {
            tenant_id: tenant_id.to_owned(),
            questionnaire,
        };
        let event = new_event(&published, tenant_id, "system:call-logging")?;
        let stream =
            Self::questionnaire_stream(tenant_id, &published.questionnaire.questionnaire_id)?;
        let result = self
            .store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .map_err(Error::from)?;
        Ok((
            published.questionnaire.questionnaire_id,
            result.stream_version,
        ))
    }

    /// Publishes the tenant's own dispositions, each mapped onto a standard one.
    pub async fn publish_dispositions(
        &self,
        tenant_id: &str,
        mapping_json: &str,
    ) -> Result<u64, Error> {
        if tenant_id.is_empty() || tenant_id.len() > 64 {
            return Err(invalid("tenant_id", "must be 1-64 characters"));
        }
        let mapping: BTreeMap<String, String> =
            serde_json::from_str(mapping_json).map_err(|_| {
                invalid(
                    "mapping_json",
                    "must be an object of name to standard disposition",
                )
            })?;
        for (name, standard) in &mapping {
            let well_formed = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !well_formed || DISPOSITIONS.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("mapping_json.{name}"),
                    "must be 1-64 of a-z, 0-9, _ and not a standard name",
                ));
            }
            if !DISPOSITIONS.contains(&standard.as_str()) {
                return Err(invalid(
                    &format!("mapping_json.{name}"),
                    format!("must map to one of {}", DISPOSITIONS.join(", ")),
                ));
            }
        }
        let stream = StreamName::new(DispositionsPublished::CATEGORY, tenant_id.to_owned())
            .map_err(Error::from)?;
        let published = DispositionsPublished {
            tenant_id: tenant_id.to_owned(),
            mapping,
        };
        let event = new_event(&published, tenant_id, "system:call-logging")?;
        let result = self
            .store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .map_err(Error::from)?;
        Ok(result.stream_version)
    }

    /// The tenant's latest published disposition mapping (empty when none).
    pub(super) async fn dispositions(
        &self,
        tenant_id: &str,
    ) -> Result<BTreeMap<String, String>, Error> {
        let stream = StreamName::new(DispositionsPublished::CATEGORY, tenant_id.to_owned())
            .map_err(|_| invalid("tenant_id", "is not valid"))?;
        let events = self
            .store
            .read_stream(&stream, 1)
            .await
            .map_err(Error::from)?;
        match events.last() {
            None => Ok(BTreeMap::new()),
            Some(event) => Ok(decode::<DispositionsPublished>(event)?.mapping),
        }
    }

    pub(super) async fn questionnaire(
        &self,
        tenant_id: &str,
        id: &str,
        version: u64,
    ) -> Result<Questionnaire, Error> {
        let events = self
            .store
            .read_stream(&Self::questionnaire_stream(tenant_id, id)?, version.max(1))
            .await
            .map_err(Error::from)?;
        let event = events
            .first()
            .filter(|e| e.stream_version as u64 == version)
            .ok_or_else(|| {
                invalid(
                    "questionnaire_version",
                    format!("questionnaire `{id}` has no version {version}"),
                )
            })?;
        let published: QuestionnairePublished = decode(event)?;
        Ok(published.questionnaire)
    }
}
