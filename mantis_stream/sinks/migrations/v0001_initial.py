"""Schema version 1: assets, work orders, anomaly events, RUL history.

SQL in a Python module (not a .sql file) so that it ships in every install,
wheel or editable, without package-data. Never edit once released: add v0002_*.py.
"""

SQL = r"""
-- mantis-stream PostgreSQL schema, version 1.
--
-- Applied by mantis_stream.sinks.migrations.migrate() inside one transaction
-- that holds an advisory lock, so two workers starting together apply it once.
-- Natural keys + ON CONFLICT make every insert idempotent under replay.

CREATE TABLE assets (
    asset_id    text PRIMARY KEY,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL
);

CREATE TABLE work_orders (
    work_order_id          text PRIMARY KEY,           -- deterministic, made upstream
    asset_id               text NOT NULL REFERENCES assets (asset_id),
    status                 text NOT NULL DEFAULT 'open'
                           CHECK (status IN ('open', 'in_progress', 'closed', 'cancelled')),
    priority               text NOT NULL,
    reason                 text NOT NULL,
    rul                    double precision,
    evidence               jsonb NOT NULL DEFAULT '{}'::jsonb,
    trace_id               text,                       -- of the message that opened it
    last_trace_id          text,                       -- of the latest message merged into it
    merged_work_order_ids  text[] NOT NULL DEFAULT '{}', -- later orders folded into this open one
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    closed_at              timestamptz
);

-- At most one open work order per asset and reason, enforced by the database.
CREATE UNIQUE INDEX work_orders_one_open_per_asset_reason
    ON work_orders (asset_id, reason)
    WHERE status IN ('open', 'in_progress');
CREATE INDEX work_orders_asset_created ON work_orders (asset_id, created_at DESC);
CREATE INDEX work_orders_merged_ids ON work_orders USING gin (merged_work_order_ids);

CREATE TABLE anomaly_events (
    asset_id       text NOT NULL,
    sensor_id      text NOT NULL,
    ts             timestamptz NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    score          double precision NOT NULL,
    threshold      double precision,
    is_anomaly     boolean NOT NULL,
    trace_id       text,
    inserted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_id, sensor_id, ts, model_name, model_version)
);
CREATE INDEX anomaly_events_ts ON anomaly_events (ts);

CREATE TABLE rul_history (
    asset_id       text NOT NULL,
    sensor_id      text NOT NULL DEFAULT '',           -- '' when the estimate is per asset
    ts             timestamptz NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    rul            double precision NOT NULL,
    unit           text NOT NULL,
    lower          double precision,
    upper          double precision,
    health_index   double precision,
    cycle          bigint,
    trace_id       text,
    inserted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_id, sensor_id, ts, model_name, model_version)
);
CREATE INDEX rul_history_ts ON rul_history (ts);
"""
