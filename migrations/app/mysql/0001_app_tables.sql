-- What the app reads from palate (MariaDB / MySQL). Each restaurant is written in one
-- transaction; a result is replaced only by a newer valid one.
CREATE TABLE IF NOT EXISTS palate_results (
    restaurant_id  VARCHAR(191) NOT NULL,
    kind           VARCHAR(16)  NOT NULL,  -- sentiment | summary | strengths
    result_json    LONGTEXT     NOT NULL CHECK (JSON_VALID(result_json)),
    model          VARCHAR(255) NOT NULL,
    prompt_version VARCHAR(64)  NOT NULL,
    input_hash     VARCHAR(64)  NOT NULL,
    run_id         BIGINT       NOT NULL,  -- in the work database of the worker that ran it
    created_at     DATETIME(3)  NOT NULL,  -- UTC, when the analysis was stored
    delivered_at   DATETIME(3)  NOT NULL,  -- UTC
    PRIMARY KEY (restaurant_id, kind)
) DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS palate_restaurants (
    restaurant_id     VARCHAR(191) NOT NULL PRIMARY KEY,
    run_id            BIGINT       NOT NULL,
    analysed_at       DATETIME(3)  NOT NULL,  -- UTC
    analyses_ok       INT          NOT NULL,
    analyses_failed   INT          NOT NULL,
    reviews_total     INT          NOT NULL,
    reviews_selected  INT          NOT NULL,
    requests          INT          NOT NULL,
    requests_failed   INT          NOT NULL,
    prompt_tokens     BIGINT       NOT NULL,
    completion_tokens BIGINT       NOT NULL,
    ttft_p50_ms       DOUBLE,
    ttft_p95_ms       DOUBLE,
    goodput           DOUBLE,                 -- share of requests within every SLA
    delivered_at      DATETIME(3)  NOT NULL
) DEFAULT CHARSET = utf8mb4;
