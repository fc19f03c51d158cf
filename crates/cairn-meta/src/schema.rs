//! The versioned schema. Migration N takes the store from version N-1 to N; a store is
//! migrated forward when opened, in one transaction per migration, and a store newer than
//! this build is refused rather than misread. The same SQL runs on SQLite and PostgreSQL.

/// Every migration, in order; the store's version is how many have run.
pub const MIGRATIONS: &[&str] = &[
    // 1: experiments, runs, params, tags, metrics (history and latest), stages, run inputs and
    // outputs. Experiment 0 is MLflow's "Default".
    r#"
CREATE TABLE experiments (
    experiment_id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    artifact_location TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES experiments (experiment_id),
    name TEXT NOT NULL,
    parent_run_id TEXT,
    status TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT,
    user_id TEXT NOT NULL,
    git_commit TEXT,
    git_dirty BIGINT NOT NULL,
    source TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, start_time);
CREATE TABLE params (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE tags (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE metrics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL
);
CREATE INDEX metrics_by_run_key ON metrics (run_id, key, step, timestamp);
CREATE TABLE latest_metrics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE stages (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    action TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    wall_ms BIGINT NOT NULL,
    cpu_ms BIGINT,
    max_rss_kb BIGINT,
    fingerprint TEXT,
    log TEXT,
    PRIMARY KEY (run_id, stage)
);
CREATE TABLE run_io (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    direction TEXT NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (run_id, direction, path)
);
INSERT INTO experiments VALUES (0, 'Default', '', 'active', 0, 0);
"#,
    // 2: what the MLflow-compatible server needs beyond version 1: experiment tags, dataset
    // inputs of runs, artifacts (a path in the artifact tree, naming a cache object), and
    // NaN metric values (SQLite stores a NaN as NULL, so a NaN is `is_nan = 1`, value 0).
    r#"
CREATE TABLE experiment_tags (
    experiment_id BIGINT NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
);
CREATE TABLE run_inputs (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, name, digest)
);
CREATE TABLE artifacts (
    path TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    modified BIGINT NOT NULL
);
CREATE INDEX latest_metrics_by_key ON latest_metrics (key, value);
ALTER TABLE metrics ADD COLUMN is_nan BIGINT NOT NULL DEFAULT 0;
ALTER TABLE latest_metrics ADD COLUMN is_nan BIGINT NOT NULL DEFAULT 0;
UPDATE experiments SET artifact_location = 'mlflow-artifacts:/0' WHERE experiment_id = 0 AND artifact_location = '';
"#,
    // 3: the model registry: models, immutable versions, aliases with the history of every
    // move, approvals, the policies an alias move must satisfy, and tags (version 0: the
    // model's own tags).
    r#"
CREATE TABLE registered_models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL
);
CREATE TABLE model_versions (
    name TEXT NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    kind TEXT NOT NULL,
    model_file TEXT NOT NULL,
    runtime TEXT NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT,
    signature TEXT NOT NULL,
    lineage TEXT NOT NULL,
    profile TEXT,
    description TEXT NOT NULL,
    user_id TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE model_aliases (
    name TEXT NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE alias_history (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT,
    previous BIGINT,
    user_id TEXT NOT NULL,
    time BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX alias_history_by_alias ON alias_history (name, alias, time);
CREATE TABLE model_approvals (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    comment TEXT NOT NULL,
    time BIGINT NOT NULL
);
CREATE INDEX model_approvals_by_version ON model_approvals (name, version);
CREATE TABLE model_tags (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key)
);
CREATE TABLE alias_policies (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    approvals BIGINT NOT NULL,
    conditions TEXT NOT NULL,
    PRIMARY KEY (name, alias)
);
"#,
    // 4: rollouts: a canary version and its share of an alias's traffic, and shadow versions
    // that get a copy of it.
    r#"
CREATE TABLE model_rollouts (
    name TEXT NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    canary BIGINT,
    weight BIGINT NOT NULL,
    shadows TEXT NOT NULL,
    user_id TEXT NOT NULL,
    time BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);
"#,
    // 5: the process that owns a running run (host, pid and the pid's start time, so a reused
    // pid is not mistaken for it) and its last heartbeat: a run whose process is gone is
    // marked KILLED instead of staying RUNNING forever. And whether an alias's policy lets its
    // model be deleted (by default a protected alias protects its model).
    r#"
CREATE TABLE run_owners (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    process_start BIGINT NOT NULL,
    heartbeat BIGINT NOT NULL
);
ALTER TABLE alias_policies ADD COLUMN allow_delete BIGINT NOT NULL DEFAULT 0;
"#,
    // 6: MLflow 3's logged models: a model logged from training code, with its own params,
    // tags and metrics (each metric naming the run and dataset it was measured on), the
    // content digest of its artifacts once it is finalized, and the models each run read
    // (`input`) or produced (`output`, at a step).
    r#"
CREATE TABLE logged_models (
    model_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES experiments (experiment_id),
    name TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL,
    model_type TEXT NOT NULL,
    source_run_id TEXT,
    user_id TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL,
    digest TEXT,
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL
);
CREATE INDEX logged_models_by_experiment ON logged_models (experiment_id, creation_time);
CREATE TABLE logged_model_params (
    model_id TEXT NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);
CREATE TABLE logged_model_tags (
    model_id TEXT NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);
CREATE TABLE logged_model_metrics (
    model_id TEXT NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    run_id TEXT,
    dataset_name TEXT,
    dataset_digest TEXT
);
CREATE INDEX logged_model_metrics_by_model ON logged_model_metrics (model_id, key, timestamp, step);
CREATE TABLE run_models (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (run_id, model_id, direction)
);
"#,
    // 7: why a stage failed (a check that did not hold, a command's exit), kept with the run.
    r#"
ALTER TABLE stages ADD COLUMN error TEXT;
"#,
    // 8: runs in start order (the runs table's pages), and params and latest metrics by key
    // with everything a listing reads of them (a filter or sort key over every run reads the
    // index alone).
    r#"
CREATE INDEX runs_by_start ON runs (start_time, run_id);
CREATE INDEX params_by_key ON params (key, run_id, value);
CREATE INDEX latest_metrics_by_key_run ON latest_metrics (key, run_id, value, timestamp, step, is_nan);
"#,
    // 9: users and service accounts, and their API tokens (only a hash of each secret).
    r#"
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    service BIGINT NOT NULL,
    admin BIGINT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT,
    revoked BIGINT,
    last_used BIGINT
);
CREATE INDEX tokens_by_user ON tokens (user_name, created);
"#,
    // 10: the audit log: every write a server took, appended, never changed.
    r#"
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    time BIGINT NOT NULL,
    user_name TEXT NOT NULL,
    address TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    object TEXT NOT NULL,
    status BIGINT NOT NULL,
    request TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);
"#,
];

/// The version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}
