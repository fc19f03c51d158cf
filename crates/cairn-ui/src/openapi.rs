//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

/// One `GET` (or `POST`) operation: its summary, parameters and what it answers.
fn op(summary: &str, params: &[(&str, &str, bool)], answers: &str) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|(name, place, required)| json!({"name": name, "in": place, "required": required, "schema": {"type": "string"}}))
        .collect();
    json!({
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": {"description": answers, "content": {"application/json": {}}},
            "4XX": {"$ref": "#/components/responses/Error"},
            "5XX": {"$ref": "#/components/responses/Error"},
        },
    })
}

/// The document.
pub fn document() -> Value {
    let q = "query";
    let p = "path";
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cairn API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The values the CLI prints with --json, over HTTP. The web UI uses nothing else.",
        },
        "paths": {
            "/api/v1/whoami": {"get": op("The acting user, and whether this server takes actions", &[], "{user, actions}")},
            "/api/v1/runs": {"get": op(
                "One page of runs: MLflow's filter syntax, any sort key, keyset pagination",
                &[("filter", q, false), ("order_by", q, false), ("page_token", q, false), ("max_results", q, false)],
                "RunPage {runs, total, next_page_token}",
            )},
            "/api/v1/runs/keys": {"get": op("Every param and metric key of the runs (a column chooser)", &[], "RunKeys {params, metrics}")},
            "/api/v1/runs/{run}": {"get": op("One run (id, id prefix or name)", &[("run", p, true)], "RunSummary")},
            "/api/v1/runs/{run}/history": {"get": op(
                "A metric's history, downsampled (LTTB) with the true min and max kept",
                &[("run", p, true), ("key", q, true), ("points", q, false)],
                "MetricHistory {run_id, key, recorded, points: [[step, value]], min, max}",
            )},
            "/api/v1/compare": {"get": op("Runs side by side", &[("runs", q, true)], "Comparison {runs, params, metrics}")},
            "/api/v1/pipeline": {"get": op(
                "The pipeline graph: stages with state, reasons, last materialization, parts as ranges; and its layout",
                &[],
                "AssetGraph {stages, edges, running, error, layout}",
            )},
            "/api/v1/pipeline/stages/{stage}/log": {"get": op("The tail of a stage's last log", &[("stage", p, true)], "{stage, log}")},
            "/api/v1/lineage": {"get": op("Where a tracked path came from", &[("path", q, true)], "Lineage")},
            "/api/v1/trace/{id}": {"get": op("A prediction and everything behind it", &[("id", p, true)], "Trace")},
            "/api/v1/models": {"get": op("Registered models", &[], "[ModelSummary]")},
            "/api/v1/models/{name}/versions": {"get": op("A model's versions", &[("name", p, true)], "[VersionDocument]")},
            "/api/v1/models/{name}/history": {"get": op("Every alias move of a model", &[("name", p, true)], "[AliasEvent]")},
            "/api/v1/models/{name}/aliases": {"get": op("A model's aliases with their policies and live rollouts", &[("name", p, true)], "[AliasState]")},
            "/api/v1/models/{name}/rollouts/{alias}": {"post": op(
                "Changes an alias's rollout (body {canary, weight, shadows, clear}); a canary must meet the alias's policy",
                &[("name", p, true), ("alias", p, true)],
                "RolloutState",
            )},
            "/api/v1/models/{name}/aliases/{alias}": {"post": op(
                "Moves an alias to a version (body {version, reason}); its policy applies",
                &[("name", p, true), ("alias", p, true)],
                "AliasMoved",
            )},
            "/api/v1/models/{name}/versions/{version}/approve": {"post": op(
                "Approves a version as the acting user (body {comment})",
                &[("name", p, true), ("version", p, true)],
                "{name, version, by}",
            )},
            "/api/v1/monitor/{model}": {"get": op(
                "Each served version's report: traffic, failures, drift per feature, quality",
                &[("model", p, true), ("version", q, false), ("since", q, false), ("window", q, false)],
                "[MonitorReport]",
            )},
            "/api/v1/alerts": {"get": op("Open alerts (all=true: resolved ones too)", &[("all", q, false), ("model", q, false)], "[AlertView]")},
            "/api/v1/alerts/{id}/requests": {"get": op("The logged requests behind an alert", &[("id", p, true)], "FoundRequests {requests}")},
        },
        "components": {
            "responses": {
                "Error": {
                    "description": "What failed and what to do",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "properties": {"error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "hint": {"type": ["string", "null"]},
                            },
                        }},
                    }}},
                },
            },
        },
    })
}
