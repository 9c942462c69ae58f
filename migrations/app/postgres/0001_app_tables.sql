-- What the app reads from palate (PostgreSQL). Each restaurant is written in one transaction;
-- a result is replaced only by a newer valid one.
CREATE TABLE IF NOT EXISTS palate_results (
    restaurant_id  TEXT        NOT NULL,
    kind           TEXT        NOT NULL,  -- sentiment | summary | strengths
    result_json    JSONB       NOT NULL,
    model          TEXT        NOT NULL,
    prompt_version TEXT        NOT NULL,
    input_hash     TEXT        NOT NULL,
    run_id         BIGINT      NOT NULL,  -- in the work database of the worker that ran it
    created_at     TIMESTAMPTZ NOT NULL,  -- when the analysis was stored
    delivered_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (restaurant_id, kind)
);

CREATE TABLE IF NOT EXISTS palate_restaurants (
    restaurant_id     TEXT             NOT NULL PRIMARY KEY,
    run_id            BIGINT           NOT NULL,
    analysed_at       TIMESTAMPTZ      NOT NULL,
    analyses_ok       INTEGER          NOT NULL,
    analyses_failed   INTEGER          NOT NULL,
    reviews_total     INTEGER          NOT NULL,
    reviews_selected  INTEGER          NOT NULL,
    requests          INTEGER          NOT NULL,
    requests_failed   INTEGER          NOT NULL,
    prompt_tokens     BIGINT           NOT NULL,
    completion_tokens BIGINT           NOT NULL,
    ttft_p50_ms       DOUBLE PRECISION,
    ttft_p95_ms       DOUBLE PRECISION,
    goodput           DOUBLE PRECISION,  -- share of requests within every SLA
    delivered_at      TIMESTAMPTZ      NOT NULL
);
