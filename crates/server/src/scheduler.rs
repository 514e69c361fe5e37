//! Continuous batching: one worker thread per model owns it and an engine [`Batch`].
//! Requests arrive on a channel; between decode steps the worker admits waiting ones
//! (each prefilled into its own cache), then every sequence in flight gets its next token
//! from one batched forward pass. A sequence leaves the moment it finishes, its client
//! hangs up, or its request cancels it, and its slot goes to the next waiting request.
//!
//! With a draft model, a request that has the model to itself is decoded speculatively:
//! the draft proposes k tokens, one pass of the model checks them (the same tokens greedy,
//! the model's distribution sampled). The moment another request arrives the sequence
//! joins the batch (its tokens so far prefilled) and decoding goes on batched: drafting
//! pays at batch 1, where a decode step is bound by reading the weights, not under load.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use ferrochat_engine::{generate_speculative, Batch, FinishReason, GenerateOptions, SeqId};
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
    /// Speculative decoding: passes of the model that checked drafts, tokens drafted, of
    /// those kept, and tokens generated that way.
    pub spec_rounds: AtomicU64,
    pub spec_drafted: AtomicU64,
    pub spec_accepted: AtomicU64,
    pub spec_tokens: AtomicU64,
}

/// A small model that drafts `k` tokens at a time for the served one (same tokenizer).
pub struct Draft {
    pub model: Llama,
    pub k: usize,
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
    /// With a `draft`, a sequence running alone is decoded speculatively.
    pub fn start(
        name: &str,
        model: Llama,
        draft: Option<Draft>,
        max_batch: usize,
        max_waiting: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        let worker_stats = stats.clone();
        // The loop runs on a rayon pool of its own, so the model's kernels share their
        // work with that pool's other threads instead of handing all of it over and
        // sleeping (two thread switches per operation); and a loop that waits for
        // requests never holds a thread of the pool the rest of the process uses. The
        // pool's threads end with the loop; a panic in it ends this thread, as before.
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name({
                let name = name.to_string();
                move |i| format!("batch-{name}-{i}")
            })
            .stack_size(64 << 20)
            .build()
            .expect("cannot start the model's threads");
        std::thread::Builder::new()
            .name(format!("batch-{name}"))
            .spawn(move || {
                pool.install(|| work(&model, draft.as_ref(), rx, max_batch.max(1), &worker_stats))
            })
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

fn add(n: u64, c: &AtomicU64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Decodes `job`, alone, with the draft's help until it ends or another job arrives (then
/// queued in `queue`). Returns the job to go on in the batch (prompt = its tokens so far,
/// what is left of its budget) when it was interrupted, else None.
fn speculate(
    model: &Llama,
    draft: &Draft,
    job: Job,
    rx: &mpsc::Receiver<Job>,
    queue: &mut VecDeque<Job>,
    stats: &SchedulerStats,
) -> Option<Job> {
    let r = Running {
        index: job.index,
        events: job.events.clone(),
        cancel: job.cancel.clone(),
    };
    stats.running.store(1, Ordering::Relaxed);
    add(job.prompt.len() as u64, &stats.prompt_tokens);
    let t = Instant::now();
    let mut interrupted = false;
    let mut gone = false;
    let result = generate_speculative(
        model,
        &draft.model,
        &job.prompt,
        &job.opts,
        draft.k,
        |tok| {
            if !r.send(Event::Token(tok)) || r.abandoned() {
                gone = true;
                return false;
            }
            while let Ok(next) = rx.try_recv() {
                queue.push_back(next);
            }
            interrupted = !queue.is_empty();
            !interrupted
        },
    );
    add(t.elapsed().as_micros() as u64, &stats.decode_micros);
    stats.running.store(0, Ordering::Relaxed);
    let (out, spec) = match result {
        Ok(x) => x,
        Err(e) => {
            add(1, &stats.failed);
            r.send(Event::Error(e.to_string()));
            return None;
        }
    };
    add(spec.rounds as u64, &stats.spec_rounds);
    add(spec.drafted as u64, &stats.spec_drafted);
    add(spec.accepted as u64, &stats.spec_accepted);
    add(out.tokens.len() as u64, &stats.spec_tokens);
    add(out.tokens.len() as u64, &stats.generated_tokens);
    match out.finish {
        FinishReason::Cancelled
            if interrupted && !gone && out.tokens.len() >= job.opts.max_new_tokens =>
        {
            add(1, &stats.finished);
            r.send(Event::Done(FinishReason::Length));
            None
        }
        FinishReason::Cancelled if interrupted && !gone => {
            // go on batched with the others, from where it got to
            let mut prompt = job.prompt;
            prompt.extend(&out.tokens);
            let opts = GenerateOptions {
                max_new_tokens: job.opts.max_new_tokens.saturating_sub(out.tokens.len()),
                seed: job.opts.seed.wrapping_add(out.tokens.len() as u64),
                ..job.opts
            };
            stats.waiting.fetch_add(1, Ordering::Relaxed);
            Some(Job {
                prompt,
                opts,
                ..job
            })
        }
        FinishReason::Cancelled => {
            add(1, &stats.cancelled);
            r.send(Event::Done(FinishReason::Cancelled));
            None
        }
        f => {
            // a stop token ends the output without passing through the callback
            if f == FinishReason::Stop {
                if let Some(&last) = out.tokens.last() {
                    r.send(Event::Token(last));
                }
            }
            add(1, &stats.finished);
            r.send(Event::Done(f));
            None
        }
    }
}

fn work(
    model: &Llama,
    draft: Option<&Draft>,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    stats: &SchedulerStats,
) {
    let mut batch = Batch::new(model);
    let mut running: HashMap<SeqId, Running> = HashMap::new();
    let mut queue: VecDeque<Job> = VecDeque::new();
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
        // alone with the model: draft and check
        if let Some(d) = draft {
            if batch.is_empty() && queue.len() == 1 {
                let job = queue.pop_front().expect("one job");
                stats.waiting.fetch_sub(1, Ordering::Relaxed);
                if job.cancel.load(Ordering::Relaxed) || job.events.is_closed() {
                    add(1, &stats.cancelled);
                    continue;
                }
                if let Some(rest) = speculate(model, d, job, &rx, &mut queue, stats) {
                    queue.push_front(rest);
                }
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use ferrochat_engine::{generate, SamplingParams};
    use ferrochat_model::{weights, Config};

    fn model(seed: u64) -> Llama {
        let cfg = Config {
            tie_word_embeddings: false,
            ..Config::preset("tiny", 64, 96).unwrap()
        };
        let w = weights::init_weights(&cfg, seed, &Device::Cpu).unwrap();
        Llama::new(&cfg, &w, &Device::Cpu).unwrap()
    }

    fn job(
        prompt: Vec<u32>,
        max: usize,
    ) -> (Job, tokio::sync::mpsc::UnboundedReceiver<(usize, Event)>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let opts = GenerateOptions {
            max_new_tokens: max,
            sampling: SamplingParams::greedy(),
            seed: 0,
            stop: vec![],
            watermark: None,
        };
        let j = Job {
            index: 0,
            prompt,
            opts,
            events: tx,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        (j, rx)
    }

    #[test]
    fn a_drafted_sequence_hands_over_to_the_batch_where_it_stopped() {
        let (target, draft) = (model(1), model(2));
        let prompt = vec![3, 9, 27, 17, 51];
        let want = generate(&target, &prompt, &job(prompt.clone(), 40).0.opts, |_| true)
            .unwrap()
            .tokens;
        let (j, mut events) = job(prompt.clone(), 40);
        // another request is already waiting: drafting stops after its first pass
        let (tx, rx) = mpsc::channel();
        tx.send(job(vec![1, 2], 4).0).unwrap();
        let mut queue = VecDeque::new();
        let stats = SchedulerStats::default();
        let d = Draft { model: draft, k: 3 };
        let rest = speculate(&target, &d, j, &rx, &mut queue, &stats).expect("handed over");
        assert_eq!(queue.len(), 1);
        let done = stats.spec_tokens.load(Ordering::Relaxed) as usize;
        assert!((1..=4).contains(&done), "{done} tokens before the handover");
        assert_eq!(rest.prompt.len(), prompt.len() + done);
        assert_eq!(rest.opts.max_new_tokens, 40 - done);
        // the batch goes on from there to the tokens the model alone gives
        let mut batch = Batch::new(&target);
        let id = batch.add(&rest.prompt, &rest.opts).unwrap();
        let mut got: Vec<u32> = rest.prompt[prompt.len()..].to_vec();
        while !batch.is_empty() {
            for t in batch.step().unwrap() {
                assert_eq!(t.id, id);
                got.push(t.token);
            }
        }
        assert_eq!(got, want);
        // and the client heard the drafted tokens as they came
        let mut heard = Vec::new();
        while let Ok((_, Event::Token(t))) = events.try_recv() {
            heard.push(t);
        }
        assert_eq!(heard, want[..done]);
    }
}
