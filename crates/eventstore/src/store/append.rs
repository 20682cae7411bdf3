//! Appending: one statement per batch, the version check, idempotent retries, several
//! streams at once.

use super::*;

/// The columns of a multi-stream append, one entry per event.
pub(super) struct StreamColumns<'a> {
    stream_ids: Vec<String>,
    categories: Vec<&'a str>,
    expected: Vec<i64>,
    offsets: Vec<i32>,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schemas: Vec<i32>,
    payloads: Vec<&'a str>,
    metadata: Vec<String>,
}

impl StreamColumns<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            stream_ids: Vec::with_capacity(n),
            categories: Vec::with_capacity(n),
            expected: Vec::with_capacity(n),
            offsets: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schemas: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        }
    }
}

pub(super) const APPEND_SQL: &str = r#"
WITH current AS (
    SELECT coalesce(max(stream_version), 0) AS version FROM events WHERE stream_id = $1
), inserted AS (
    INSERT INTO events (event_id, stream_id, stream_category, stream_version,
                        event_type, schema_version, payload, metadata)
    SELECT e.event_id, $1, $2, current.version + e.ordinal,
           e.event_type, e.schema_version, e.payload::json, e.metadata::json
    FROM current,
         unnest($3::uuid[], $4::text[], $5::int4[], $6::text[], $7::text[])
             WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, ordinal)
    WHERE $8::bigint IS NULL OR current.version = $8
    RETURNING position, stream_version
)
SELECT (SELECT version FROM current) AS current_version,
       (SELECT min(position) FROM inserted) AS first_position,
       (SELECT max(stream_version) FROM inserted) AS last_version
"#;

/// [`EventStore::append_streams_in`]: one statement for several streams. A stream whose version
/// is not the expected one is returned in `stale` and then nothing is inserted.
pub(super) const APPEND_STREAMS_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int4[], $5::uuid[], $6::text[],
                         $7::int4[], $8::text[], $9::text[])
        WITH ORDINALITY AS i(stream_id, stream_category, expected, offset_in_stream, event_id,
                             event_type, schema_version, payload, metadata, n)
), stale AS (
    SELECT i.stream_id FROM input i
    WHERE i.offset_in_stream = 1
      AND i.expected <> coalesce((SELECT max(e.stream_version) FROM events e
                                  WHERE e.stream_id = i.stream_id), 0)
), inserted AS (
    INSERT INTO events (event_id, stream_id, stream_category, stream_version,
                        event_type, schema_version, payload, metadata)
    SELECT i.event_id, i.stream_id, i.stream_category, i.expected + i.offset_in_stream,
           i.event_type, i.schema_version, i.payload::json, i.metadata::json
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM stale)
    ORDER BY i.n
    RETURNING position, stream_id, stream_version
)
SELECT stream_id, min(position) AS first_position, max(stream_version) AS last_version,
       false AS stale
FROM inserted GROUP BY stream_id
UNION ALL
SELECT stream_id, NULL, NULL, true FROM stale
"#;

/// How often an append with `ExpectedVersion::Any` retries when a concurrent writer took the
/// same stream version first. Each retry follows another writer's commit (a unique violation
/// is only raised once the competitor commits), so the system always makes progress; the
/// bound only stops a pathological starvation.
pub(super) const ANY_VERSION_RETRIES: usize = 1000;

impl EventStore {
    /// Appends a batch to one stream in its own transaction, then wakes subscribers.
    #[tracing::instrument(name = "eventstore.append", skip_all, fields(category = stream.category(), events = events.len()))]
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        let mut conn = self.pool.acquire().await?;
        let result = self
            .append_with(&mut conn, false, stream, expected, events)
            .await?;
        if !result.already_written {
            self.notifier.committed();
        }
        Ok(result)
    }

    /// Appends inside the caller's transaction, so events and the caller's own rows commit
    /// together. Commit with [`EventStore::commit`] so subscribers are woken. `tx` must be inside
    /// a transaction (a `Transaction` or a consumer's connection derefs to one).
    ///
    /// With `ExpectedVersion::Any` the append runs under a savepoint, so a lost race is
    /// retried and an idempotent retry recognised without aborting the caller's transaction.
    /// With an exact expectation no savepoint is taken (two round trips fewer): a retried
    /// command fails the version check first, which is recognised without an error, and any
    /// other conflict is the caller's to roll back and report.
    pub async fn append_in(
        &self,
        tx: &mut PgConnection,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        self.append_with(tx, true, stream, expected, events).await
    }

    /// Appends to several streams in one statement inside the caller's transaction: all or
    /// nothing, each stream with its exact expectation (`NoStream` or `Exact`), for commands that
    /// change many aggregates at once (a batch of claims). Results come in the order of
    /// `appends`. A stale expectation is a [`Error::VersionConflict`] naming the first such
    /// stream, with nothing written and the transaction still usable; a writer racing on the
    /// same stream version aborts the transaction with a conflict too.
    pub async fn append_streams_in(
        &self,
        tx: &mut PgConnection,
        appends: &[StreamAppend<'_>],
    ) -> Result<Vec<AppendResult>> {
        match self.try_append_streams(tx, appends).await? {
            Ok(results) => Ok(results),
            Err(stale) => {
                let append = &appends[stale];
                let stream_id = append.stream.stream_id();
                let actual = self.stream_version_on(tx, &stream_id).await?;
                Err(Error::VersionConflict {
                    stream: stream_id,
                    expected: append.expected,
                    actual,
                })
            }
        }
    }

    /// Appends the streams of several commands (one slice per command) in one statement, in
    /// the caller's transaction, for commands served together. A command with a stale
    /// expectation (typically a retry whose streams exist already) is left out and the others
    /// appended again; it gets `false`, the written ones `true`. A writer racing on the same
    /// stream version aborts the transaction with a conflict, as in
    /// [`EventStore::append_streams_in`].
    pub async fn append_commands_in(
        &self,
        tx: &mut PgConnection,
        commands: &[Vec<StreamAppend<'_>>],
    ) -> Result<Vec<bool>> {
        let mut written = vec![true; commands.len()];
        loop {
            let (owners, appends): (Vec<usize>, Vec<StreamAppend>) = commands
                .iter()
                .enumerate()
                .filter(|(i, _)| written[*i])
                .flat_map(|(i, appends)| appends.iter().map(move |a| (i, *a)))
                .unzip();
            if appends.is_empty() {
                return Ok(written);
            }
            // The statement wrote nothing when it found a stale expectation.
            match self.try_append_streams(tx, &appends).await? {
                Ok(_) => return Ok(written),
                Err(stale) => written[owners[stale]] = false,
            }
        }
    }

    /// One multi-stream append: the results, or the index of the first append whose
    /// expectation was stale (nothing written, the transaction still usable).
    pub(super) async fn try_append_streams(
        &self,
        tx: &mut PgConnection,
        appends: &[StreamAppend<'_>],
    ) -> Result<std::result::Result<Vec<AppendResult>, usize>> {
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        if appends.is_empty() || appends.iter().any(|a| a.events.is_empty()) {
            return Err(Error::EmptyBatch);
        }
        if total > MAX_BATCH_EVENTS {
            return Err(Error::BatchTooLarge {
                actual: total,
                limit: MAX_BATCH_EVENTS,
            });
        }
        let mut columns = StreamColumns::with_capacity(total);
        let mut streams = HashSet::with_capacity(appends.len());
        let mut seen_ids = HashSet::with_capacity(total);
        for append in appends {
            let Some(expected) = append.expected.required() else {
                return Err(Error::InvalidStream(format!(
                    "{}: a multi-stream append needs an exact expected version",
                    append.stream.stream_id()
                )));
            };
            if !streams.insert(append.stream.stream_id()) {
                return Err(Error::InvalidStream(format!(
                    "{} appears twice in one multi-stream append",
                    append.stream.stream_id()
                )));
            }
            self.check_category(append.stream.category()).await?;
            for (offset, event) in append.events.iter().enumerate() {
                let index = columns.ids.len();
                let metadata = event.validate(index)?;
                if !seen_ids.insert(event.event_id) {
                    return Err(Error::InvalidEvent {
                        index,
                        field: "event_id",
                        reason: format!("event id {} appears twice in the batch", event.event_id),
                    });
                }
                columns.stream_ids.push(append.stream.stream_id());
                columns.categories.push(append.stream.category());
                columns.expected.push(expected as i64);
                columns.offsets.push(offset as i32 + 1);
                columns.ids.push(event.event_id);
                columns.types.push(&event.event_type);
                columns.schemas.push(event.schema_version);
                columns.payloads.push(&event.payload);
                columns.metadata.push(metadata);
            }
        }
        let rows = sqlx::query(APPEND_STREAMS_SQL)
            .bind(&columns.stream_ids)
            .bind(&columns.categories)
            .bind(&columns.expected)
            .bind(&columns.offsets)
            .bind(&columns.ids)
            .bind(&columns.types)
            .bind(&columns.schemas)
            .bind(&columns.payloads)
            .bind(&columns.metadata)
            .fetch_all(&mut *tx)
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => return Err(self.racing_append_error(error, appends, &columns.ids).await),
        };
        let mut written = std::collections::HashMap::with_capacity(rows.len());
        let mut stale = HashSet::new();
        for row in &rows {
            let stream_id: String = row.try_get("stream_id")?;
            if row.try_get::<bool, _>("stale")? {
                stale.insert(stream_id);
            } else {
                let first: i64 = row.try_get("first_position")?;
                let last: i64 = row.try_get("last_version")?;
                written.insert(stream_id, (first, last));
            }
        }
        if let Some(index) = appends
            .iter()
            .position(|a| stale.contains(&a.stream.stream_id()))
        {
            return Ok(Err(index));
        }
        crate::stats::record(
            columns
                .categories
                .iter()
                .zip(&columns.types)
                .map(|(category, event_type)| (*category, &**event_type)),
        );
        appends
            .iter()
            .map(|append| {
                let (first_position, last) = written
                    .get(&append.stream.stream_id())
                    .copied()
                    .ok_or_else(|| Error::Background("multi-stream append lost a stream".into()))?;
                Ok(AppendResult {
                    stream_version: last as u64,
                    first_position,
                    already_written: false,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Ok)
    }

    /// The typed error for a multi-stream append the database refused. A unique violation is
    /// raised only once the competing writer committed, so another connection sees its rows
    /// (the caller's transaction is aborted).
    pub(super) async fn racing_append_error(
        &self,
        error: sqlx::Error,
        appends: &[StreamAppend<'_>],
        ids: &[Uuid],
    ) -> Error {
        let constraint = violated_unique_constraint(&error);
        let mut other = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return e.into(),
        };
        match constraint.as_deref() {
            Some("events_event_id_key") => self.first_taken_id(&mut other, ids).await,
            Some(_) => {
                for append in appends {
                    let stream_id = append.stream.stream_id();
                    match self.stream_version_on(&mut other, &stream_id).await {
                        Ok(actual) if Some(actual) != append.expected.required() => {
                            return Error::VersionConflict {
                                stream: stream_id,
                                expected: append.expected,
                                actual,
                            };
                        }
                        Ok(_) => {}
                        Err(e) => return e,
                    }
                }
                error.into()
            }
            None => error.into(),
        }
    }

    pub(super) async fn append_with(
        &self,
        conn: &mut PgConnection,
        in_transaction: bool,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        if events.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if events.len() > MAX_BATCH_EVENTS {
            return Err(Error::BatchTooLarge {
                actual: events.len(),
                limit: MAX_BATCH_EVENTS,
            });
        }
        let mut metadata = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            metadata.push(event.validate(index)?);
        }
        let mut seen = HashSet::with_capacity(events.len());
        for event in events {
            if !seen.insert(event.event_id) {
                return Err(Error::InvalidEvent {
                    index: 0,
                    field: "event_id",
                    reason: format!("event id {} appears twice in the batch", event.event_id),
                });
            }
        }
        self.check_category(stream.category()).await?;

        let stream_id = stream.stream_id();
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let schemas: Vec<i32> = events.iter().map(|e| e.schema_version).collect();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        let required = expected.required().map(|v| v as i64);

        let mut attempt = 0;
        loop {
            attempt += 1;
            // Inside a caller's transaction a savepoint keeps it usable when the insert hits
            // a unique violation we recover from (idempotent retry, racing `Any` appends).
            let savepoint = in_transaction && expected == ExpectedVersion::Any;
            if savepoint {
                sqlx::query("SAVEPOINT callback_append")
                    .execute(&mut *conn)
                    .await?;
            }
            let outcome = sqlx::query(APPEND_SQL)
                .bind(&stream_id)
                .bind(stream.category())
                .bind(&ids)
                .bind(&types)
                .bind(&schemas)
                .bind(&payloads)
                .bind(&metadata)
                .bind(required)
                .fetch_one(&mut *conn)
                .await;
            if savepoint {
                let end = if outcome.is_ok() {
                    "RELEASE SAVEPOINT callback_append"
                } else {
                    "ROLLBACK TO SAVEPOINT callback_append"
                };
                sqlx::query(end).execute(&mut *conn).await?;
            }
            match outcome {
                Ok(row) => {
                    let current: i64 = row.try_get("current_version")?;
                    let first: Option<i64> = row.try_get("first_position")?;
                    let last: Option<i64> = row.try_get("last_version")?;
                    if let (Some(first_position), Some(last)) = (first, last) {
                        crate::stats::record(types.iter().map(|t| (stream.category(), *t)));
                        return Ok(AppendResult {
                            stream_version: last as u64,
                            first_position,
                            already_written: false,
                        });
                    }
                    // The version check failed: a retry of an append that already landed
                    // is a success, anything else a conflict.
                    if let Some(done) = self.already_written(&mut *conn, &stream_id, &ids).await? {
                        return Ok(done);
                    }
                    return Err(Error::VersionConflict {
                        stream: stream_id,
                        expected,
                        actual: current as u64,
                    });
                }
                Err(error) => {
                    let constraint = violated_unique_constraint(&error);
                    if constraint.is_none() {
                        return Err(error.into());
                    }
                    if expected == ExpectedVersion::Any
                        && constraint.as_deref() == Some("events_stream_version_key")
                        && attempt < ANY_VERSION_RETRIES
                    {
                        // A concurrent writer took the version between our read and insert.
                        continue;
                    }
                    // Follow-up reads: on the caller's transaction when a savepoint kept it
                    // usable, else on another connection. A unique violation is only raised
                    // once the competitor committed, so the other connection sees its rows.
                    let caller_tx_aborted = in_transaction && !savepoint;
                    let mut other;
                    let follow_up: &mut PgConnection = if caller_tx_aborted {
                        other = self.pool.acquire().await?;
                        &mut other
                    } else {
                        &mut *conn
                    };
                    return match constraint.as_deref() {
                        // Success only while the caller's transaction is still usable; a
                        // racing duplicate in an aborted transaction must be reported.
                        Some("events_event_id_key") => {
                            match self.already_written(follow_up, &stream_id, &ids).await {
                                Ok(Some(done)) if !caller_tx_aborted => Ok(done),
                                Ok(_) => Err(self.first_taken_id(follow_up, &ids).await),
                                Err(e) => Err(e),
                            }
                        }
                        _ => {
                            let actual = self.stream_version_on(follow_up, &stream_id).await?;
                            Err(Error::VersionConflict {
                                stream: stream_id,
                                expected,
                                actual,
                            })
                        }
                    };
                }
            }
        }
    }

    /// If every id of the batch is already in this stream, the result of that earlier append.
    pub(super) async fn already_written(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
        ids: &[Uuid],
    ) -> Result<Option<AppendResult>> {
        let row = sqlx::query(
            "SELECT count(*) AS found, min(position) AS first_position, \
                    max(stream_version) AS last_version, \
                    bool_and(stream_id = $2) AS same_stream \
             FROM events WHERE event_id = ANY($1)",
        )
        .bind(ids)
        .bind(stream_id)
        .fetch_one(conn)
        .await?;
        let found: i64 = row.try_get("found")?;
        let same_stream: Option<bool> = row.try_get("same_stream")?;
        if found as usize == ids.len() && same_stream == Some(true) {
            let first_position: i64 = row.try_get("first_position")?;
            let last_version: i64 = row.try_get("last_version")?;
            return Ok(Some(AppendResult {
                stream_version: last_version as u64,
                first_position,
                already_written: true,
            }));
        }
        Ok(None)
    }

    pub(super) async fn first_taken_id(&self, conn: &mut PgConnection, ids: &[Uuid]) -> Error {
        match sqlx::query_scalar::<_, Uuid>(
            "SELECT event_id FROM events WHERE event_id = ANY($1) LIMIT 1",
        )
        .bind(ids)
        .fetch_optional(conn)
        .await
        {
            Ok(Some(id)) => Error::DuplicateEventId(id),
            Ok(None) => Error::DuplicateEventId(ids[0]),
            Err(e) => e.into(),
        }
    }
}
