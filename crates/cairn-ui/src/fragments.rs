//! Server-rendered pieces of pages (`/ui/…`): metric charts as SVG images and the drift
//! panels as HTML, drawn by [`crate::render`], the same code as `cairn plots show` and
//! `cairn monitor --html`. Every value in them is escaped on the server.

use axum::Router;
use axum::extract::{Path, Query, State as Shared};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_app::browse;
use cairn_app::reports::{self, Selection};
use serde::Deserialize;

use crate::State;
use crate::api::answer_with;
use crate::render::{self, COLOURS, Line};

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/ui/chart/history.svg", get(history_chart))
        .route("/ui/fragments/monitor/{model}", get(monitor_sections))
}

fn typed(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    /// Comma-separated run ids or names.
    runs: String,
    key: String,
    points: Option<usize>,
}

/// One metric of one or more runs, each line downsampled on the server.
async fn history_chart(Shared(state): Shared<State>, Query(q): Query<HistoryQuery>) -> Response {
    let runs: Vec<String> = q.runs.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect();
    answer_with(&state, move |ws| {
        let mut lines = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            let history = browse::history(ws, run, &q.key, q.points.unwrap_or(1000))?;
            lines.push(Line {
                label: history.run_id.chars().take(8).collect(),
                colour: COLOURS[i % COLOURS.len()],
                points: history.points,
            });
        }
        Ok(typed("image/svg+xml", render::line_chart(&q.key, "step", &lines)))
    })
    .await
}

#[derive(Deserialize)]
struct MonitorQuery {
    version: Option<i64>,
    since: Option<String>,
}

/// Per served version and feature: the statistic, the verdict and both histograms.
async fn monitor_sections(
    Shared(state): Shared<State>,
    Path(model): Path<String>,
    Query(q): Query<MonitorQuery>,
) -> Response {
    answer_with(&state, move |ws| {
        let select = Selection { model: model.clone(), version: q.version, since: q.since, log_dir: None };
        let mut found = reports::reports(ws, &reports::ReportRequest { select, window: None })?;
        let documents: Vec<_> = found.iter_mut().map(|r| reports::report_document(&model, r)).collect();
        Ok(typed("text/html; charset=utf-8", render::monitor_sections(&model, &documents)))
    })
    .await
}
