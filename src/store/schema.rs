//! Schema migrations. `PRAGMA user_version` holds the number of migrations applied; each entry of
//! [`MIGRATIONS`] runs once, in order, in its own transaction. Never edit a released migration:
//! append a new one.

use rusqlite::Connection;

use super::StoreError;

pub const MIGRATIONS: &[&str] = &[
    // 1: reviews, embeddings, runs, results, metrics.
    r#"
CREATE TABLE restaurants (
    restaurant_id TEXT PRIMARY KEY,
    input_hash    TEXT NOT NULL,      -- sha256 over its (review_id, content_hash) pairs, sorted
    review_count  INTEGER NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE reviews (
    review_id     TEXT PRIMARY KEY,
    restaurant_id TEXT NOT NULL,
    text          TEXT NOT NULL,
    rating        REAL,
    created_at    TEXT,
    lang          TEXT,
    content_hash  TEXT NOT NULL,      -- sha256 of text
    source_file   TEXT NOT NULL,
    source_line   INTEGER NOT NULL,
    ingested_at   TEXT NOT NULL
);
CREATE INDEX reviews_by_restaurant ON reviews (restaurant_id);
CREATE TABLE embeddings (
    content_hash TEXT NOT NULL,
    model_id     TEXT NOT NULL,
    dim          INTEGER NOT NULL,
    vector       BLOB NOT NULL,       -- dim little-endian f32, L2-normalised
    created_at   TEXT NOT NULL,
    PRIMARY KEY (content_hash, model_id)
) WITHOUT ROWID;
CREATE TABLE runs (
    run_id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_name            TEXT NOT NULL,
    command             TEXT NOT NULL,
    model               TEXT NOT NULL,
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    status              TEXT NOT NULL, -- running | completed | completed_with_failures | failed | interrupted
    restaurants_done    INTEGER NOT NULL DEFAULT 0,
    restaurants_skipped INTEGER NOT NULL DEFAULT 0,
    restaurants_failed  INTEGER NOT NULL DEFAULT 0,
    requests            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens       INTEGER NOT NULL DEFAULT 0,
    completion_tokens   INTEGER NOT NULL DEFAULT 0,
    wall_ms             REAL,
    config_json         TEXT NOT NULL
);
CREATE TABLE results (
    restaurant_id  TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('sentiment', 'summary', 'strengths')),
    input_hash     TEXT NOT NULL,     -- restaurant input + selection settings + embedding model
    prompt_version TEXT NOT NULL,     -- sha256 prefix of the prompt and schema files
    model          TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    result_json    TEXT,              -- the validated result; NULL when failed
    error          TEXT,              -- why it failed; NULL when ok
    error_class    TEXT,              -- invalid_output | context_length: final for this key;
                                      -- transient | permanent: retried by the next run
    attempts       INTEGER NOT NULL,
    run_id         INTEGER NOT NULL REFERENCES runs (run_id),
    created_at     TEXT NOT NULL,
    PRIMARY KEY (restaurant_id, kind, input_hash, prompt_version, model),
    CHECK ((status = 'ok') = (result_json IS NOT NULL))
);
CREATE VIEW current_results AS
SELECT restaurant_id, kind, result_json, model, prompt_version, input_hash, run_id, created_at
FROM (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY restaurant_id, kind ORDER BY created_at DESC, rowid DESC) AS rn
    FROM results WHERE status = 'ok'
) WHERE rn = 1;
CREATE TABLE analysis_metrics (
    id                     INTEGER PRIMARY KEY,
    run_id                 INTEGER NOT NULL REFERENCES runs (run_id),
    restaurant_id          TEXT NOT NULL,
    kind                   TEXT NOT NULL,
    outcome                TEXT NOT NULL, -- ok | failed
    failure_reason         TEXT,
    attempts               INTEGER NOT NULL,
    processing_ms          REAL NOT NULL,
    prompt_tokens          INTEGER NOT NULL,
    completion_tokens      INTEGER NOT NULL,
    reviews_total          INTEGER NOT NULL,
    reviews_selected       INTEGER NOT NULL,
    est_tokens_all_reviews INTEGER NOT NULL,
    est_tokens_selected    INTEGER NOT NULL,
    created_at             TEXT NOT NULL
);
CREATE INDEX analysis_metrics_by_run ON analysis_metrics (run_id);
CREATE TABLE vllm_metrics (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs (run_id),
    restaurant_id     TEXT NOT NULL,
    kind              TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    request_id        TEXT,
    endpoint          TEXT NOT NULL,
    model             TEXT NOT NULL,
    status            TEXT NOT NULL,  -- ok | error
    error_class       TEXT,           -- transient | permanent | context_length | invalid_output
    error             TEXT,
    finish_reason     TEXT,
    queue_ms          REAL NOT NULL,  -- waiting for an in-flight slot inside palate
    ttft_ms           REAL,
    e2e_ms            REAL NOT NULL,
    tpot_ms           REAL,
    itl_mean_ms       REAL,
    tokens_per_s      REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cached_tokens     INTEGER,
    server_prompt_ms  REAL,           -- llama.cpp `timings` / vLLM per-request metrics, if sent
    server_decode_ms  REAL,
    started_at        TEXT NOT NULL
);
CREATE INDEX vllm_metrics_by_run ON vllm_metrics (run_id);
"#,
    // 2: scheduling and metrics: which model answered, HTTP retries, priority, prefill/decode
    // split, per-run summary, server metrics samples, daily view.
    r#"
ALTER TABLE results ADD COLUMN answered_by TEXT;      -- the model that answered (a fallback?)
ALTER TABLE vllm_metrics ADD COLUMN retry INTEGER NOT NULL DEFAULT 0; -- 0 = first HTTP try
ALTER TABLE vllm_metrics ADD COLUMN priority INTEGER; -- vLLM `priority` sent, if any
ALTER TABLE vllm_metrics ADD COLUMN est_prefill_tokens INTEGER; -- palate's scheduling key
ALTER TABLE vllm_metrics ADD COLUMN itl_p95_ms REAL;
ALTER TABLE vllm_metrics ADD COLUMN server_queue_ms REAL; -- vLLM per-request metrics, if sent
ALTER TABLE vllm_metrics ADD COLUMN prefill_ms REAL;  -- server's figure, else TTFT
ALTER TABLE vllm_metrics ADD COLUMN decode_ms REAL;   -- server's figure, else E2E - TTFT
ALTER TABLE vllm_metrics ADD COLUMN meets_sla INTEGER; -- 1 when ok and within every SLA
ALTER TABLE runs ADD COLUMN summary_json TEXT;        -- metrics::RunSummary at the end
CREATE TABLE server_metrics (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs (run_id),
    source   TEXT NOT NULL,       -- endpoint base URL, or `nvml`
    at       TEXT NOT NULL,
    name     TEXT NOT NULL,       -- e.g. vllm:num_requests_waiting, llamacpp:requests_processing, gpu_utilization_percent
    labels   TEXT NOT NULL,       -- Prometheus labels as written, '' if none
    value    REAL NOT NULL
);
CREATE INDEX server_metrics_by_run ON server_metrics (run_id, name);
-- Goodput and SLA compliance per day (the seed's dashboard query).
CREATE VIEW daily_metrics AS
SELECT substr(m.started_at, 1, 10)                         AS day,
       count(*)                                            AS requests,
       sum(m.status = 'ok')                                AS ok,
       sum(coalesce(m.meets_sla, 0))                       AS good,
       round(100.0 * sum(coalesce(m.meets_sla, 0)) / count(*), 1) AS sla_compliance_pct,
       round(sum(coalesce(m.meets_sla, 0)) * 1000.0 / nullif((
           SELECT sum(r.wall_ms) FROM runs r
           WHERE substr(r.started_at, 1, 10) = substr(m.started_at, 1, 10)), 0), 3) AS goodput_rps,
       round(avg(m.ttft_ms), 1)                            AS ttft_mean_ms,
       sum(m.completion_tokens)                            AS output_tokens
FROM vllm_metrics m
GROUP BY day;
"#,
    // 3: failures counted by kind: the group the run summary shows, and the error class, per
    // analysis. (`vllm_metrics` keeps its name, which the app reads, though it holds every
    // OpenAI-compatible server's requests, llama.cpp's included.)
    r#"
ALTER TABLE analysis_metrics ADD COLUMN failure_group TEXT; -- e.g. invalid output: schema
ALTER TABLE analysis_metrics ADD COLUMN error_class TEXT;   -- transient | permanent | context_length | invalid_output
"#,
    // 4: answer quality per run and per day: result sizes and empty strengths, and a view of
    // failures by kind per day so that drift shows from night to night.
    r#"
ALTER TABLE analysis_metrics ADD COLUMN output_chars INTEGER; -- characters of the stored result
ALTER TABLE analysis_metrics ADD COLUMN empty INTEGER;        -- 1: valid strengths, none praised
CREATE VIEW daily_quality AS
SELECT substr(created_at, 1, 10)                                        AS day,
       count(*)                                                         AS analyses,
       round(100.0 * sum(outcome = 'ok') / count(*), 1)                 AS valid_pct,
       sum(coalesce(failure_group, '') LIKE 'invalid output: degenerate%') AS degenerate,
       sum(coalesce(failure_group, '') = 'invalid output: wrong language') AS wrong_language,
       sum(coalesce(empty, 0))                                          AS no_strengths,
       round(avg(CASE WHEN outcome = 'ok' AND kind = 'summary' THEN output_chars END), 0)   AS summary_chars,
       round(avg(CASE WHEN outcome = 'ok' AND kind = 'strengths' THEN output_chars END), 0) AS strengths_chars
FROM analysis_metrics
GROUP BY day;
"#,
    // 5: why a run failed: the error that ended it, or that a later run found it still
    // `running` (killed, crashed, power lost).
    r#"
ALTER TABLE runs ADD COLUMN error TEXT;
"#,
    // 6: the app-database outbox: a restaurant whose results the app's database has not yet
    // received. Queued in the transaction that stores the results, removed once delivered.
    r#"
CREATE TABLE deliveries (
    restaurant_id TEXT PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs (run_id),
    queued_at     TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    last_try_at   TEXT
);
"#,
    // 7: reviews by content hash, so that finding the texts still to embed pages through the
    // catalogue once (keyset on content_hash) instead of grouping every review for each page.
    r#"
CREATE INDEX reviews_by_content ON reviews (content_hash);
"#,
    // 8: embeddings in a rowid table. WITHOUT ROWID keeps a whole row in an index b-tree, whose
    // cells hold ~1 KB locally: every 1.5 KB vector spilled into an overflow page of its own,
    // so the table took 4.5 KB per vector and reading one took two page reads (10,000
    // restaurants × 40 reviews: 1,785 MB). A rowid table keeps the row in its leaf; the key
    // moves to a small unique index.
    r#"
CREATE TABLE embeddings_rowid (
    content_hash TEXT NOT NULL,
    model_id     TEXT NOT NULL,
    dim          INTEGER NOT NULL,
    vector       BLOB NOT NULL,       -- dim little-endian f32, L2-normalised
    created_at   TEXT NOT NULL,
    UNIQUE (content_hash, model_id)
);
INSERT INTO embeddings_rowid (content_hash, model_id, dim, vector, created_at)
SELECT content_hash, model_id, dim, vector, created_at FROM embeddings ORDER BY content_hash, model_id;
DROP TABLE embeddings;
ALTER TABLE embeddings_rowid RENAME TO embeddings;
"#,
];

/// Applies the migrations this database has not seen yet.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // One write transaction, taken before the version is read: a second process opening a
    // fresh database at the same moment waits for it, then finds the schema current.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for sql in MIGRATIONS.iter().skip(current) {
        tx.execute_batch(sql)?;
    }
    if current < MIGRATIONS.len() {
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    }
    tx.commit()?;
    Ok(())
}
