//! Adaptive batching: concurrent requests to one model version run as one batch.
//!
//! Off by default (`cairn serve --batch-max N`). Workers (one per session in the pool) take
//! the first waiting request, then everything already queued, up to `max_batch` rows. They
//! wait for more — at most `max_wait` — only while other requests for this version are on
//! their way (counted from the moment a handler starts on one), so a lone client never waits:
//! its latency stays that of an unbatched call, and batches form only under concurrency.
//!
//! A request that finds no other one announced or queued for its version skips the queue
//! and runs directly ([`Batcher::alone`]).
//!
//! A batch joins each input along the batch dimension, runs once and splits the outputs by
//! rows. Requests whose inputs cannot be joined (different widths) run on their own; when a
//! batch fails, its requests are retried one by one so one bad request fails alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::runtime::{Model, RuntimeError};
use crate::tensor::{Output, Tensor};

#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub workers: usize,
}

type Answer = Result<Vec<(String, Output)>, RuntimeError>;

struct Job {
    inputs: Vec<(String, Tensor)>,
    rows: usize,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// The queue in front of one model version.
pub struct Batcher {
    queue: Mutex<Option<Sender<Job>>>,
    /// Requests that have started towards this version and not yet been taken by a worker.
    coming: Arc<AtomicUsize>,
}

/// Held by a request from when it starts until its job is queued: tells workers more work is
/// on its way.
pub struct Coming {
    coming: Arc<AtomicUsize>,
    armed: bool,
}

impl Drop for Coming {
    fn drop(&mut self) {
        if self.armed {
            self.coming.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Batcher {
    pub fn start(model: Arc<dyn Model>, config: BatchConfig, name: &str) -> Self {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let coming = Arc::new(AtomicUsize::new(0));
        for i in 0..config.workers.max(1) {
            let (rx, model, config, coming) = (rx.clone(), model.clone(), config.clone(), coming.clone());
            let _ = std::thread::Builder::new()
                .name(format!("batch {name} {i}"))
                .spawn(move || worker(&rx, model.as_ref(), &config, &coming));
        }
        Self { queue: Mutex::new(Some(tx)), coming }
    }

    /// Announces a request (call as soon as it is known to be for this version).
    pub fn announce(&self) -> Coming {
        self.coming.fetch_add(1, Ordering::AcqRel);
        Coming { coming: self.coming.clone(), armed: true }
    }

    /// Whether no other request for this version is on its way or queued: then there is
    /// nothing to batch with, and the caller runs its request directly (a queue hand-off
    /// would only add latency).
    pub fn alone(&self) -> bool {
        self.coming.load(Ordering::Acquire) <= 1
    }

    /// Queues a request and waits for its rows of the batch's answer.
    pub async fn run(&self, mut coming: Coming, inputs: Vec<(String, Tensor)>) -> Answer {
        let rows = inputs.first().map_or(0, |(_, t)| t.rows());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = {
            let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            // From here the worker that takes the job counts it off.
            coming.armed = false;
            queue.as_ref().is_some_and(|q| q.send(Job { inputs, rows, reply }).is_ok())
        };
        if !sent {
            self.coming.fetch_sub(1, Ordering::AcqRel);
            return Err(RuntimeError::Run("the batch queue is closed (the server is shutting down)".into()));
        }
        answer.await.unwrap_or_else(|_| Err(RuntimeError::Run("the batch worker stopped".into())))
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the queue ends the workers once it is drained.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, model: &dyn Model, config: &BatchConfig, coming: &AtomicUsize) {
    loop {
        let jobs = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(first) = rx.recv() else { return };
            coming.fetch_sub(1, Ordering::AcqRel);
            let mut rows = first.rows;
            let mut jobs = vec![first];
            let deadline = Instant::now() + config.max_wait;
            while rows < config.max_batch {
                let next = match rx.try_recv() {
                    Ok(job) => Some(job),
                    // Wait only while more requests are on their way.
                    Err(_) if coming.load(Ordering::Acquire) > 0 => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            None
                        } else {
                            match rx.recv_timeout(left.min(Duration::from_micros(200))) {
                                Ok(job) => Some(job),
                                Err(RecvTimeoutError::Timeout) => continue,
                                Err(RecvTimeoutError::Disconnected) => None,
                            }
                        }
                    }
                    Err(_) => None,
                };
                let Some(job) = next else { break };
                coming.fetch_sub(1, Ordering::AcqRel);
                rows += job.rows;
                jobs.push(job);
            }
            jobs
        };
        run_batch(model, jobs);
    }
}

/// Whether two requests' inputs can be joined: same names, types and row shapes.
fn joinable(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, ta), (nb, tb))| {
            na == nb && ta.data.dtype() == tb.data.dtype() && ta.shape.get(1..) == tb.shape.get(1..)
        })
}

fn run_batch(model: &dyn Model, jobs: Vec<Job>) {
    if jobs.len() == 1 || !jobs.iter().all(|j| joinable(&jobs[0].inputs, &j.inputs)) {
        for job in jobs {
            let answer = model.run(&job.inputs);
            let _ = job.reply.send(answer);
        }
        return;
    }
    let inputs: Vec<(String, Tensor)> = jobs[0]
        .inputs
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let parts: Vec<&Tensor> = jobs.iter().map(|j| &j.inputs[i].1).collect();
            (name.clone(), Tensor::concat(&parts))
        })
        .collect();
    match model.run(&inputs) {
        Ok(outputs) => {
            let mut from = 0;
            for job in jobs {
                let to = from + job.rows;
                let mine = outputs
                    .iter()
                    .map(|(name, out)| {
                        // Outputs without a batch dimension (rare) go to everyone whole.
                        let part = if out.rows() >= to { out.slice_rows(from, to) } else { out.clone() };
                        (name.clone(), part)
                    })
                    .collect();
                let _ = job.reply.send(Ok(mine));
                from = to;
            }
        }
        Err(_) => {
            for job in jobs {
                let answer = model.run(&job.inputs);
                let _ = job.reply.send(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Data;
    use std::sync::atomic::AtomicUsize;

    /// Doubles its input and counts how many times it ran.
    struct Doubler {
        runs: AtomicUsize,
        rows_seen: Mutex<Vec<usize>>,
    }

    impl Model for Doubler {
        fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Output)>, RuntimeError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let t = &inputs[0].1;
            self.rows_seen.lock().unwrap().push(t.rows());
            std::thread::sleep(Duration::from_millis(5));
            let Data::F32(v) = &t.data else { unreachable!() };
            Ok(vec![(
                "y".into(),
                Output::Tensor(Tensor {
                    shape: t.shape.clone(),
                    data: Data::F32(v.iter().map(|x| x * 2.0).collect()),
                }),
            )])
        }
    }

    fn one(x: f32) -> Vec<(String, Tensor)> {
        vec![("x".into(), Tensor { shape: vec![1, 1], data: Data::F32(vec![x]) })]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_share_batches_and_get_their_own_rows() {
        let model = Arc::new(Doubler { runs: AtomicUsize::new(0), rows_seen: Mutex::new(Vec::new()) });
        let config = BatchConfig { max_batch: 64, max_wait: Duration::from_millis(20), workers: 1 };
        let batcher = Arc::new(Batcher::start(model.clone(), config, "test"));
        let comings: Vec<Coming> = (0..32).map(|_| batcher.announce()).collect();
        let mut tasks = Vec::new();
        for (i, coming) in comings.into_iter().enumerate() {
            let b = batcher.clone();
            tasks.push(tokio::spawn(async move { (i, b.run(coming, one(i as f32)).await.unwrap()) }));
        }
        for task in tasks {
            let (i, out) = task.await.unwrap();
            assert_eq!(
                out[0].1,
                Output::Tensor(Tensor { shape: vec![1, 1], data: Data::F32(vec![i as f32 * 2.0]) })
            );
        }
        let runs = model.runs.load(Ordering::SeqCst);
        assert!(runs < 32, "32 concurrent requests ran as {runs} batches");
    }

    #[tokio::test]
    async fn a_lone_request_does_not_wait_for_a_batch() {
        let model = Arc::new(Doubler { runs: AtomicUsize::new(0), rows_seen: Mutex::new(Vec::new()) });
        let config = BatchConfig { max_batch: 64, max_wait: Duration::from_secs(2), workers: 1 };
        let batcher = Batcher::start(model, config, "test");
        let started = Instant::now();
        let coming = batcher.announce();
        batcher.run(coming, one(1.0)).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(500), "waited {:?}", started.elapsed());
    }
}
