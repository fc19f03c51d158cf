//! The stage graph: which stage feeds which, validated before anything runs.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::spec::{Pipeline, Stage};
use crate::{PipelineError, Result};

/// Edges between stages (by index into `Pipeline::stages`) and a run order.
#[derive(Debug, Clone)]
pub struct Graph {
    pub upstream: Vec<Vec<usize>>,
    pub downstream: Vec<Vec<usize>>,
    /// Every stage after all of its upstream stages; ties in file order.
    pub order: Vec<usize>,
}

/// `a` is `b` or inside it.
pub fn is_under(a: &str, b: &str) -> bool {
    b.is_empty() || a == b || (a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'/')
}

/// The directory a glob's matches live under (the part before the first wildcard).
pub fn glob_base(glob: &str) -> &str {
    let wild = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    match glob[..wild].rfind('/') {
        Some(slash) => &glob[..slash],
        None => "",
    }
}

/// The part of a path before its first `${...}` placeholder, up to the last `/`.
pub fn template_base(path: &str) -> &str {
    match path.find("${") {
        None => path,
        Some(at) => path[..at].rfind('/').map_or("", |slash| &path[..slash]),
    }
}

/// The paths a stage reads: its deps, and for a datum stage the base of its glob.
pub fn inputs(stage: &Stage) -> Vec<&str> {
    // A per-partition dep (`data/x/${partition.date}`) stands for the directory above it.
    let mut paths: Vec<&str> = stage.deps.iter().map(|d| template_base(d)).collect();
    if let Some(glob) = &stage.datums {
        paths.push(glob_base(glob));
    }
    paths
}

/// Builds and validates the graph: every output has one producer, no output is inside
/// another, every dep exists or is produced, and there are no cycles.
pub fn build(pipeline: &Pipeline, file: &Path, root: &Path) -> Result<Graph> {
    let outs = outputs(pipeline, file)?;
    let upstream = upstream(pipeline, file, root, &outs)?;
    let mut downstream = vec![Vec::new(); pipeline.stages.len()];
    for (i, ups) in upstream.iter().enumerate() {
        for &j in ups {
            downstream[j].push(i);
        }
    }
    order(pipeline, file, upstream, downstream)
}

/// Orders the stages so each comes after those it depends on (Kahn's algorithm, taking
/// ready stages in file order), or names a cycle.
fn order(
    pipeline: &Pipeline,
    file: &Path,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
) -> Result<Graph> {
    let stages = &pipeline.stages;
    let at = |i: usize| format!("`{}` (line {})", stages[i].name, stages[i].line);
    let invalid = |message: String| PipelineError::Graph { file: file.to_path_buf(), message };
    let mut remaining: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..stages.len()).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(stages.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &downstream[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() < stages.len() {
        let cycle = find_cycle(&upstream, &remaining);
        let names: Vec<String> = cycle.iter().map(|&i| at(i)).collect();
        return Err(invalid(format!("the stages form a cycle: {}", names.join(" → "))));
    }
    Ok(Graph { upstream, downstream, order })
}

/// Every output with the stage that writes it, sorted; checks that each has one writer,
/// none is the repository root or a pipeline file, and none is inside another.
fn outputs<'p>(pipeline: &'p Pipeline, file: &Path) -> Result<Vec<(&'p str, usize)>> {
    let stages = &pipeline.stages;
    let at = |i: usize| format!("`{}` (line {})", stages[i].name, stages[i].line);
    let invalid = |message: String| PipelineError::Graph { file: file.to_path_buf(), message };
    let mut outs: Vec<(&str, usize)> = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        for out in &stage.outs {
            if out.path.is_empty() {
                return Err(invalid(format!("stage {} declares the repository root as an output", at(i))));
            }
            if out.path == crate::spec::PIPELINE_FILE || out.path == crate::lock::LOCK_FILE {
                return Err(invalid(format!("stage {} declares `{}` as an output", at(i), out.path)));
            }
            outs.push((&out.path, i));
        }
    }
    outs.sort();
    for pair in outs.windows(2) {
        let ((a, i), (b, j)) = (pair[0], pair[1]);
        if a == b {
            return Err(invalid(if i == j {
                format!("stage {} declares the output `{a}` twice", at(i))
            } else {
                format!(
                    "stages {} and {} both write `{a}`; each output must have one stage that writes it",
                    at(i),
                    at(j)
                )
            }));
        }
    }
    for &(a, i) in &outs {
        for &(b, j) in &outs {
            if a != b && is_under(a, b) {
                return Err(invalid(format!(
                    "the output `{a}` of stage {} is inside the output `{b}` of stage {}; outputs cannot be nested",
                    at(i),
                    at(j)
                )));
            }
        }
    }

    Ok(outs)
}

/// The stages each stage depends on: the writers of its deps, of directories containing
/// them, and of outputs inside them. Every dep must exist or be written by a stage.
fn upstream(
    pipeline: &Pipeline,
    file: &Path,
    root: &Path,
    outs: &[(&str, usize)],
) -> Result<Vec<Vec<usize>>> {
    let stages = &pipeline.stages;
    let at = |i: usize| format!("`{}` (line {})", stages[i].name, stages[i].line);
    let invalid = |message: String| PipelineError::Graph { file: file.to_path_buf(), message };
    let producer: HashMap<&str, usize> = outs.iter().map(|&(p, i)| (p, i)).collect();
    let mut upstream = vec![BTreeSet::new(); stages.len()];
    for (i, stage) in stages.iter().enumerate() {
        for dep in inputs(stage) {
            let mut produced = false;
            // The producer of the dep itself or of a directory containing it ...
            let mut cursor = dep;
            loop {
                if let Some(&j) = producer.get(cursor) {
                    produced = true;
                    if j == i {
                        return Err(invalid(format!("stage {} depends on its own output `{cursor}`", at(i))));
                    }
                    upstream[i].insert(j);
                }
                match cursor.rfind('/') {
                    Some(slash) => cursor = &cursor[..slash],
                    None => break,
                }
            }
            // ... and of outputs inside a dep directory.
            for &(out, j) in outs {
                if out != dep && is_under(out, dep) {
                    if j == i {
                        return Err(invalid(format!(
                            "stage {} depends on `{dep}`, which contains its own output `{out}`",
                            at(i)
                        )));
                    }
                    produced = true;
                    upstream[i].insert(j);
                }
            }
            let templated = stage.deps.iter().any(|d| d.contains("${") && template_base(d) == dep);
            if !produced && !templated && std::fs::symlink_metadata(root.join(dep)).is_err() {
                return Err(invalid(format!(
                    "stage {} depends on `{dep}`, which does not exist and no stage writes it",
                    at(i)
                )));
            }
        }
    }
    Ok(upstream.into_iter().map(|s| s.into_iter().collect()).collect())
}

/// A cycle among the stages Kahn's algorithm could not order (those with `remaining > 0`).
fn find_cycle(upstream: &[Vec<usize>], remaining: &[usize]) -> Vec<usize> {
    let start = (0..remaining.len()).find(|&i| remaining[i] > 0).unwrap_or(0);
    // Walk upstream edges that stay inside the unordered set until a stage repeats.
    let mut path = vec![start];
    let mut current = start;
    loop {
        let Some(&next) = upstream[current].iter().find(|&&u| remaining[u] > 0) else { return path };
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            return cycle;
        }
        path.push(next);
        current = next;
    }
}

impl Graph {
    /// `targets` and everything upstream of them, in run order.
    pub fn closure(&self, targets: &[usize]) -> Vec<usize> {
        let mut keep = vec![false; self.order.len()];
        let mut stack: Vec<usize> = targets.to_vec();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut keep[i], true) {
                stack.extend(&self.upstream[i]);
            }
        }
        self.order.iter().copied().filter(|&i| keep[i]).collect()
    }
}
