-- Events seen per service feed and event type: the analytics service's first read model,
-- fed over gRPC from the other services' feeds. Rebuildable from the log.
CREATE TABLE analytics_feed_activity (
    source text NOT NULL,
    category text NOT NULL,
    event_type text NOT NULL,
    events bigint NOT NULL,
    last_recorded_at timestamptz NOT NULL,
    PRIMARY KEY (source, category, event_type)
);
