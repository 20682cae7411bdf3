//! Reading: one stream, several streams, and the global order up to the visibility horizon.

use super::*;

pub(super) const SELECT_COLUMNS: &str =
    "position, transaction_id, event_id, stream_id, stream_category, \
     stream_version, event_type, schema_version, payload::text AS payload, \
     metadata::text AS metadata, recorded_at";

/// Converts a row whose event columns start at index `first` in `SELECT_COLUMNS` order.
/// Columns are taken by index, not name: catch-up converts hundreds of thousands of rows a
/// second and a name lookup per column per row is measurable.
pub(super) fn recorded_event(row: &PgRow, first: usize) -> Result<RecordedEvent> {
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

impl EventStore {
    pub(super) async fn stream_version_on(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
    ) -> Result<u64> {
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
    /// nothing can later appear before the returned checkpoint. Reaching that horizon is not
    /// reading everything committed: a job that needs that waits first
    /// ([`EventStore::wait_for_horizon`], which [`EventStore::replay`] does).
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
            horizon: horizon as u64,
        })
    }

    /// Follows the log from `after`: catch-up first, then live.
    pub fn subscribe(&self, after: Checkpoint, filter: Filter) -> Subscription {
        Subscription::new(self.clone(), after, filter)
    }
}
