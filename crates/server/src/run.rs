//! One request's generation: its choices submitted to the model's scheduler, and their
//! tokens turned into text deltas and finish reasons as they come.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrochat_engine::{FinishReason, GenerateOptions};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::detok::Detokenizer;
use crate::error::{ApiError, ApiResult};
use crate::openai::GenParams;
use crate::scheduler::{Event, Job, SubmitError};
use crate::state::ServedModel;

/// What happened next in a request.
#[derive(Debug, PartialEq)]
pub enum Update {
    /// New text of choice `index` (possibly empty: a token that completes no character).
    Delta { index: usize, text: String },
    /// Choice `index` ended; `reason` is OpenAI's `finish_reason`.
    Finished { index: usize, reason: &'static str },
    /// The model failed; the request cannot go on.
    Failed(String),
}

/// The choices of one request in flight. Dropping it cancels whatever still runs.
pub struct Run {
    model: Arc<ServedModel>,
    rx: UnboundedReceiver<(usize, Event)>,
    detoks: Vec<Detokenizer>,
    cancels: Vec<Arc<AtomicBool>>,
    done: Vec<bool>,
    /// Tokens generated per choice.
    pub tokens: Vec<usize>,
    pub prompt_tokens: usize,
    /// When the first token of any choice arrived.
    pub first_token: Option<Instant>,
    pub started: Instant,
    pending: std::collections::VecDeque<Update>,
}

impl Run {
    /// Submits `prompts` (each repeated `n` times, choice `p * n + i` with seed
    /// `seed + i`) to the model.
    pub fn start(
        model: Arc<ServedModel>,
        prompts: Vec<Vec<u32>>,
        max_new: Vec<usize>,
        gen: &GenParams,
    ) -> ApiResult<Self> {
        let (tx, rx) = unbounded_channel();
        let stops: Arc<[String]> = gen.stops.clone().into();
        let mut detoks = Vec::new();
        let mut cancels = Vec::new();
        let prompt_tokens = prompts.iter().map(Vec::len).sum();
        let end = model.tokenizer.special().end;
        let mut jobs = Vec::new();
        for (p, (prompt, max_new)) in prompts.into_iter().zip(max_new).enumerate() {
            for i in 0..gen.n {
                let cancel = Arc::new(AtomicBool::new(false));
                jobs.push(Job {
                    index: p * gen.n + i,
                    prompt: prompt.clone(),
                    opts: GenerateOptions {
                        max_new_tokens: max_new,
                        sampling: gen.sampling,
                        seed: gen.seed.wrapping_add(i as u64),
                        stop: if gen.ignore_eos { vec![] } else { vec![end] },
                        watermark: gen.watermark,
                    },
                    events: tx.clone(),
                    cancel: cancel.clone(),
                });
                cancels.push(cancel);
                detoks.push(Detokenizer::new(model.tokenizer.clone(), stops.clone()));
            }
        }
        let n = jobs.len();
        let run = Self {
            model: model.clone(),
            rx,
            detoks,
            cancels,
            done: vec![false; n],
            tokens: vec![0; n],
            prompt_tokens,
            first_token: None,
            started: Instant::now(),
            pending: Default::default(),
        };
        for job in jobs {
            match model.scheduler.submit(job) {
                Ok(()) => {}
                Err(SubmitError::Busy) => {
                    return Err(ApiError::busy(format!(
                        "model `{}` has too many requests waiting; try again shortly",
                        model.name
                    )))
                }
                Err(SubmitError::Stopped) => {
                    return Err(ApiError::internal(format!(
                        "model `{}` has stopped running",
                        model.name
                    )))
                }
            }
        }
        Ok(run)
    }

    pub fn model(&self) -> &Arc<ServedModel> {
        &self.model
    }

    pub fn choices(&self) -> usize {
        self.done.len()
    }

    pub fn completion_tokens(&self) -> usize {
        self.tokens.iter().sum()
    }

    /// The next update; `None` once every choice has finished.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return Some(u);
            }
            if self.done.iter().all(|&d| d) {
                return None;
            }
            let Some((index, event)) = self.rx.recv().await else {
                return Some(Update::Failed("the model's worker stopped".into()));
            };
            if self.done[index] {
                continue;
            }
            match event {
                Event::Token(t) => {
                    self.first_token.get_or_insert_with(Instant::now);
                    self.tokens[index] += 1;
                    let piece = self.detoks[index].push(t);
                    if piece.stopped {
                        // a stop string: end this choice now, the engine at its next step
                        self.cancels[index].store(true, Ordering::Relaxed);
                        self.finish(index, "stop", piece.text);
                    } else {
                        return Some(Update::Delta {
                            index,
                            text: piece.text,
                        });
                    }
                }
                Event::Done(reason) => {
                    let tail = self.detoks[index].finish();
                    let reason = match reason {
                        FinishReason::Length => "length",
                        FinishReason::Stop | FinishReason::Cancelled => "stop",
                    };
                    self.finish(index, reason, tail);
                }
                Event::Error(e) => {
                    for (c, d) in self.cancels.iter().zip(&mut self.done) {
                        c.store(true, Ordering::Relaxed);
                        *d = true;
                    }
                    return Some(Update::Failed(e));
                }
            }
        }
    }

    fn finish(&mut self, index: usize, reason: &'static str, tail: String) {
        self.done[index] = true;
        if !tail.is_empty() {
            self.pending.push_back(Update::Delta { index, text: tail });
        }
        self.pending.push_back(Update::Finished { index, reason });
    }

    /// Runs every choice to its end: each one's text and finish reason.
    pub async fn collect(mut self) -> ApiResult<(Vec<(String, &'static str)>, Self)> {
        let mut out = vec![(String::new(), "stop"); self.choices()];
        while let Some(u) = self.next().await {
            match u {
                Update::Delta { index, text } => out[index].0.push_str(&text),
                Update::Finished { index, reason } => out[index].1 = reason,
                Update::Failed(e) => return Err(ApiError::internal(e)),
            }
        }
        Ok((out, self))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for c in &self.cancels {
            c.store(true, Ordering::Relaxed);
        }
    }
}
