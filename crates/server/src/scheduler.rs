//! Continuous batching: one worker thread per model owns it and an engine [`Batch`].
//! Requests arrive on a channel; between decode steps the worker admits waiting ones
//! (each prefilled into its own cache), then every sequence in flight gets its next token
//! from one batched forward pass. A sequence leaves the moment it finishes, its client
//! hangs up, or its request cancels it, and its slot goes to the next waiting request.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use ferrochat_engine::{Batch, FinishReason, GenerateOptions, SeqId};
use ferrochat_model::Llama;
use tokio::sync::mpsc::UnboundedSender;

/// What a request hears about one of its sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Token(u32),
    Done(FinishReason),
    Error(String),
}

/// One sequence to generate. `index` tells apart the sequences of one request that share
/// a sender (the `n` choices).
pub struct Job {
    pub index: usize,
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub events: UnboundedSender<(usize, Event)>,
    /// Set by the request to end this sequence at the next step.
    pub cancel: Arc<AtomicBool>,
}

/// Live counts, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Sequences waiting for a slot.
    pub waiting: AtomicU64,
    /// Sequences in the batch.
    pub running: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub finished: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub decode_steps: AtomicU64,
    /// Sum over decode steps of the sequences in them (mean batch = this / steps).
    pub step_sequences: AtomicU64,
    pub prefill_micros: AtomicU64,
    pub decode_micros: AtomicU64,
}

/// The handle requests submit to; dropping every handle stops the worker once its
/// sequences are done.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Job>,
    stats: Arc<SchedulerStats>,
    max_waiting: usize,
}

/// Why a job was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// More than `max_waiting` sequences are already waiting.
    Busy,
    /// The worker has stopped (its model failed to run).
    Stopped,
}

impl Scheduler {
    /// Starts the worker thread over `model`, running at most `max_batch` sequences at
    /// once and refusing new ones while `max_waiting` wait.
    pub fn start(name: &str, model: Llama, max_batch: usize, max_waiting: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("batch-{name}"))
            .spawn(move || work(&model, rx, max_batch.max(1), &worker_stats))
            .expect("cannot spawn the model's worker thread");
        Self {
            tx,
            stats,
            max_waiting,
        }
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        if self.stats.waiting.load(Ordering::Relaxed) as usize >= self.max_waiting {
            return Err(SubmitError::Busy);
        }
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.tx.send(job).map_err(|_| {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            SubmitError::Stopped
        })
    }
}

struct Running {
    index: usize,
    events: UnboundedSender<(usize, Event)>,
    cancel: Arc<AtomicBool>,
}

impl Running {
    fn send(&self, e: Event) -> bool {
        self.events.send((self.index, e)).is_ok()
    }
    fn abandoned(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

fn work(model: &Llama, rx: mpsc::Receiver<Job>, max_batch: usize, stats: &SchedulerStats) {
    let mut batch = Batch::new(model);
    let mut running: HashMap<SeqId, Running> = HashMap::new();
    let mut queue: VecDeque<Job> = VecDeque::new();
    let add = |n: u64, c: &AtomicU64| c.fetch_add(n, Ordering::Relaxed);
    loop {
        // wait for work only when there is nothing to do
        if batch.is_empty() && queue.is_empty() {
            match rx.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            queue.push_back(job);
        }
        // leave: sequences whose request is gone
        for id in batch.ids() {
            if running[&id].abandoned() {
                batch.cancel(id);
                let r = running.remove(&id).expect("running");
                r.send(Event::Done(FinishReason::Cancelled));
                add(1, &stats.cancelled);
            }
        }
        // join: waiting requests, while there are free slots
        while batch.len() < max_batch {
            let Some(job) = queue.pop_front() else { break };
            stats.waiting.fetch_sub(1, Ordering::Relaxed);
            let r = Running {
                index: job.index,
                events: job.events,
                cancel: job.cancel,
            };
            if r.abandoned() {
                add(1, &stats.cancelled);
                continue;
            }
            let t = Instant::now();
            match batch.add(&job.prompt, &job.opts) {
                Ok(id) => {
                    add(t.elapsed().as_micros() as u64, &stats.prefill_micros);
                    add(job.prompt.len() as u64, &stats.prompt_tokens);
                    running.insert(id, r);
                }
                Err(e) => {
                    add(1, &stats.failed);
                    r.send(Event::Error(e.to_string()));
                }
            }
        }
        stats.running.store(batch.len() as u64, Ordering::Relaxed);
        if batch.is_empty() {
            continue;
        }
        let t = Instant::now();
        let n = batch.len() as u64;
        match batch.step() {
            Ok(tokens) => {
                add(t.elapsed().as_micros() as u64, &stats.decode_micros);
                add(1, &stats.decode_steps);
                add(n, &stats.step_sequences);
                add(tokens.len() as u64, &stats.generated_tokens);
                for st in tokens {
                    let r = &running[&st.id];
                    let heard = r.send(Event::Token(st.token));
                    if let Some(f) = st.finish {
                        r.send(Event::Done(f));
                        running.remove(&st.id);
                        add(1, &stats.finished);
                    } else if !heard {
                        batch.cancel(st.id);
                        running.remove(&st.id);
                        add(1, &stats.cancelled);
                    }
                }
            }
            Err(e) => {
                // the batch is in no state to go on: fail what runs, start afresh
                let msg = format!("the model failed: {e}");
                tracing::error!("{msg}");
                for (_, r) in running.drain() {
                    r.send(Event::Error(msg.clone()));
                    add(1, &stats.failed);
                }
                batch = Batch::new(model);
            }
        }
        stats.running.store(batch.len() as u64, Ordering::Relaxed);
    }
}
