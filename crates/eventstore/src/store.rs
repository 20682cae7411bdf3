use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio_stream::StreamExt;
use uuid::Uuid;

use crate::error::{violated_unique_constraint, Error, Result};
use crate::model::{
    is_valid_category, AppendResult, Checkpoint, ExpectedVersion, Filter, NewEvent, ReadPage,
    RecordedEvent, StreamName, MAX_BATCH_EVENTS,
};
use crate::notify::Notifier;
use crate::subscription::Subscription;

/// One stream's part of [`EventStore::append_streams_in`].
#[derive(Clone, Copy, Debug)]
pub struct StreamAppend<'a> {
    pub stream: &'a StreamName,
    pub expected: ExpectedVersion,
    pub events: &'a [NewEvent],
}

/// The columns of a multi-stream append, one entry per event.
struct StreamColumns<'a> {
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

/// Handle to the event log. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    categories: Arc<RwLock<HashSet<String>>>,
    notifier: Notifier,
}

const APPEND_SQL: &str = r#"
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
const APPEND_STREAMS_SQL: &str = r#"
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

const SELECT_COLUMNS: &str = "position, transaction_id, event_id, stream_id, stream_category, \
     stream_version, event_type, schema_version, payload::text AS payload, \
     metadata::text AS metadata, recorded_at";

/// How often an append with `ExpectedVersion::Any` retries when a concurrent writer took the
/// same stream version first. Each retry follows another writer's commit (a unique violation
/// is only raised once the competitor commits), so the system always makes progress; the
/// bound only stops a pathological starvation.
const ANY_VERSION_RETRIES: usize = 1000;

impl EventStore {
    /// Runs the log's migrations and returns a handle. Call once per process.
    pub async fn open(pool: PgPool) -> Result<Self> {
        crate::migrator().run(&pool).await?;
        let store = Self {
            notifier: Notifier::new(pool.clone()),
            pool,
            categories: Arc::default(),
        };
        store.reload_categories().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Declares the stream categories a service owns. Idempotent.
    #[tracing::instrument(name = "eventstore.register_categories", skip_all, fields(owner))]
    pub async fn register_categories(&self, owner: &str, categories: &[&str]) -> Result<()> {
        for category in categories {
            if !is_valid_category(category) {
                return Err(Error::InvalidStream(format!(
                    "category `{category}` must be lowercase letters, digits and `_`"
                )));
            }
        }
        let names: Vec<String> = categories.iter().map(|c| c.to_string()).collect();
        sqlx::query(
            "INSERT INTO stream_categories (name, owner) SELECT unnest($1::text[]), $2 \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&names)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        self.reload_categories().await
    }

    async fn reload_categories(&self) -> Result<()> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM stream_categories")
            .fetch_all(&self.pool)
            .await?;
        let mut known = self.categories.write().unwrap_or_else(|p| p.into_inner());
        known.extend(names);
        Ok(())
    }

    async fn check_category(&self, category: &str) -> Result<()> {
        let known = |c: &str| {
            self.categories
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(c)
        };
        if known(category) {
            return Ok(());
        }
        // Another process may have registered it since we loaded the list.
        self.reload_categories().await?;
        if known(category) {
            Ok(())
        } else {
            Err(Error::UnknownCategory(category.to_owned()))
        }
    }

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
    async fn try_append_streams(
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
    async fn racing_append_error(
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

    /// Starts a transaction for [`EventStore::append_in`].
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Commits a transaction that appended events and wakes subscribers.
    pub async fn commit(&self, tx: Transaction<'static, Postgres>) -> Result<()> {
        tx.commit().await?;
        self.notifier.committed();
        Ok(())
    }

    async fn append_with(
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
    async fn already_written(
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

    async fn first_taken_id(&self, conn: &mut PgConnection, ids: &[Uuid]) -> Error {
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

    async fn stream_version_on(&self, conn: &mut PgConnection, stream_id: &str) -> Result<u64> {
        let version: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_one(conn)
        .await?;
        Ok(version as u64)
    }

    /// The stream's current version (0 when it has no events).
    pub async fn stream_version(&self, stream: &StreamName) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        self.stream_version_on(&mut conn, &stream.stream_id()).await
    }

    /// Events of one stream with version >= `from_version`, in version order.
    #[tracing::instrument(name = "eventstore.read_stream", skip_all, fields(category = stream.category()))]
    pub async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let mut conn = self.pool.acquire().await?;
        self.read_stream_on(&mut conn, stream, from_version).await
    }

    /// [`EventStore::read_stream`] on the caller's connection or transaction (which also sees
    /// the transaction's own uncommitted appends, and takes no second connection).
    pub async fn read_stream_on(
        &self,
        conn: &mut PgConnection,
        stream: &StreamName,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version >= $2 \
             ORDER BY stream_version"
        );
        let rows = sqlx::query(&sql)
            .bind(stream.stream_id())
            .bind(from_version as i64)
            .fetch_all(conn)
            .await?;
        rows.iter().map(|row| recorded_event(row, 0)).collect()
    }

    /// Every event of several streams in one query, on the caller's connection: one list per
    /// stream, in the order of `streams`, each in version order (empty for a stream with none).
    pub async fn read_streams_on(
        &self,
        conn: &mut PgConnection,
        streams: &[StreamName],
    ) -> Result<Vec<Vec<RecordedEvent>>> {
        let ids: Vec<String> = streams.iter().map(StreamName::stream_id).collect();
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM events WHERE stream_id = ANY($1) \
             ORDER BY stream_id, stream_version"
        );
        let rows = sqlx::query(&sql).bind(&ids).fetch_all(conn).await?;
        let mut by_stream: std::collections::HashMap<String, Vec<RecordedEvent>> =
            std::collections::HashMap::with_capacity(ids.len());
        for row in &rows {
            let event = recorded_event(row, 0)?;
            by_stream
                .entry(event.stream_id.clone())
                .or_default()
                .push(event);
        }
        Ok(ids
            .iter()
            .map(|id| by_stream.remove(id).unwrap_or_default())
            .collect())
    }

    /// Up to `limit` events after `after` in the gap-safe global order, matching `filter`.
    ///
    /// Only events of transactions below this statement's snapshot xmin are returned: every
    /// transaction below it has ended, and no transaction can still get an id below it, so
    /// nothing can later appear before the returned checkpoint.
    #[tracing::instrument(name = "eventstore.read_all", skip_all, fields(limit))]
    pub async fn read_all(
        &self,
        after: Checkpoint,
        filter: &Filter,
        limit: usize,
    ) -> Result<ReadPage> {
        let limit = limit.clamp(1, 10_000);
        let sql = format!(
            "SELECT h.horizon, e.* FROM \
               (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) h \
             LEFT JOIN LATERAL ( \
               SELECT {SELECT_COLUMNS} FROM events \
               WHERE (transaction_id, position) > ($1, $2) AND transaction_id < h.horizon \
                 AND (cardinality($3::text[]) = 0 OR stream_category = ANY($3)) \
                 AND (cardinality($4::text[]) = 0 OR event_type = ANY($4)) \
               ORDER BY transaction_id, position LIMIT $5 \
             ) e ON true"
        );
        // Streamed, not fetched whole: converting rows as they arrive overlaps our work with
        // the server's, which nearly doubles catch-up throughput on two cores.
        let mut rows = sqlx::query(&sql)
            .bind(after.transaction_id as i64)
            .bind(after.position)
            .bind(&filter.categories)
            .bind(&filter.event_types)
            .bind(limit as i64)
            .fetch(&self.pool);
        let mut events = Vec::with_capacity(limit.min(1024));
        let mut horizon = 0i64;
        while let Some(row) = rows.next().await {
            let row = row?;
            horizon = row.try_get(0)?;
            let position: Option<i64> = row.try_get(1)?;
            if position.is_some() {
                events.push(recorded_event(&row, 1)?);
            }
        }
        let mut checkpoint = events.last().map_or(after, |e| e.checkpoint);
        let reached_horizon = events.len() < limit;
        if reached_horizon && horizon > 0 {
            // Everything below the horizon was scanned, matching or not.
            let scanned = Checkpoint::new(horizon as u64 - 1, i64::MAX);
            checkpoint = checkpoint.max(scanned);
        }
        Ok(ReadPage {
            events,
            checkpoint: checkpoint.max(after),
            reached_horizon,
        })
    }

    /// Follows the log from `after`: catch-up first, then live.
    pub fn subscribe(&self, after: Checkpoint, filter: Filter) -> Subscription {
        Subscription::new(self.clone(), after, filter)
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}

/// Converts a row whose event columns start at index `first` in `SELECT_COLUMNS` order.
/// Columns are taken by index, not name: catch-up converts hundreds of thousands of rows a
/// second and a name lookup per column per row is measurable.
fn recorded_event(row: &PgRow, first: usize) -> Result<RecordedEvent> {
    let transaction_id: i64 = row.try_get(first + 1)?;
    let recorded_at: DateTime<Utc> = row.try_get(first + 10)?;
    Ok(RecordedEvent {
        checkpoint: Checkpoint::new(transaction_id as u64, row.try_get(first)?),
        event_id: row.try_get(first + 2)?,
        stream_id: row.try_get(first + 3)?,
        category: row.try_get(first + 4)?,
        stream_version: row.try_get(first + 5)?,
        event_type: row.try_get(first + 6)?,
        schema_version: row.try_get(first + 7)?,
        payload: row.try_get(first + 8)?,
        metadata: row.try_get(first + 9)?,
        recorded_at,
    })
}
