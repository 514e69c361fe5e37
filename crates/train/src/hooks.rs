//! What a training loop tells the outside world: per-step and evaluation reports, text
//! samples, checkpoints. The loop calls a [`Hooks`]; the console implementation draws a
//! progress bar (or, quiet, prints JSON lines) and appends every report to a metrics log.

use std::io::Write;
use std::path::{Path, PathBuf};

use ferrochat_model::Llama;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    /// Training throughput over the last step.
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
    /// The stage's own figures (reward, KL, accuracy, ...), logged beside the loss.
    #[serde(flatten)]
    pub stats: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    pub step: u64,
    pub val_loss: f64,
    /// Bits per byte of source text: comparable across tokenizers (when the stage knows
    /// the bytes behind its tokens).
    pub val_bpb: Option<f64>,
    /// The stage's own validation figures (accuracy, judged score, ...).
    #[serde(flatten)]
    pub stats: std::collections::BTreeMap<String, f64>,
}

pub trait Hooks {
    fn on_step(&mut self, _r: &StepReport) {}
    fn on_eval(&mut self, _r: &EvalReport) {}
    /// Asked every `sample_every` steps for a text sample of the model in training.
    fn sample(&mut self, _model: &Llama, _step: u64) -> Option<String> {
        None
    }
    fn on_checkpoint(&mut self, _dir: &Path, _step: u64) {}
    fn message(&mut self, _text: &str) {}
}

/// Hooks that do nothing (tests, and the ranks of a data-parallel run other than 0).
pub struct Silent;
impl Hooks for Silent {}

/// One voice for a data-parallel run: `hooks` on rank 0 (one process alone is rank 0),
/// which logs and writes metrics; nothing on the other ranks.
pub fn rank_zero(hooks: &mut dyn Hooks) -> &mut dyn Hooks {
    if crate::dist::world().is_main() {
        hooks
    } else {
        // a zero-sized value: leaking its box allocates nothing
        Box::leak(Box::new(Silent))
    }
}

/// Produces a text sample from the model in training at a step.
pub type SampleFn<'a> = Box<dyn FnMut(&Llama, u64) -> Option<String> + 'a>;

/// Progress bar with loss, tokens/s and ETA; JSON lines on stdout when quiet; every
/// report appended to `metrics.jsonl` in the run folder.
pub struct ConsoleHooks<'a> {
    bar: Option<ProgressBar>,
    quiet: bool,
    metrics: Option<PathBuf>,
    sampler: Option<SampleFn<'a>>,
}

impl<'a> ConsoleHooks<'a> {
    pub fn new(quiet: bool, metrics: Option<PathBuf>) -> Self {
        Self {
            bar: None,
            quiet,
            metrics,
            sampler: None,
        }
    }

    /// Sets how text samples are produced (the CLI passes a generator over the engine).
    pub fn with_sampler(mut self, f: impl FnMut(&Llama, u64) -> Option<String> + 'a) -> Self {
        self.sampler = Some(Box::new(f));
        self
    }

    fn log(&mut self, kind: &str, value: &impl Serialize) {
        let mut v = serde_json::to_value(value).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("kind".into(), kind.into());
        }
        let line = v.to_string();
        if self.quiet {
            println!("{line}");
        }
        if let Some(path) = &self.metrics {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }

    fn say(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Hooks for ConsoleHooks<'_> {
    fn on_step(&mut self, r: &StepReport) {
        self.log("step", r);
        if self.quiet {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(r.total_steps);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        bar.set_position(r.step);
        let mut msg = format!(
            "loss {:.3}  lr {:.2e}  {:.0} tok/s",
            r.loss, r.lr, r.tokens_per_sec
        );
        for (k, v) in r.stats.iter().take(4) {
            msg.push_str(&format!("  {k} {v:.3}"));
        }
        bar.set_message(msg);
        if r.step >= r.total_steps {
            bar.finish();
        }
    }

    fn on_eval(&mut self, r: &EvalReport) {
        self.log("eval", r);
        let bpb = r
            .val_bpb
            .map(|b| format!("  val bpb {b:.4}"))
            .unwrap_or_default();
        let extra: String = r
            .stats
            .iter()
            .map(|(k, v)| format!("  {k} {v:.4}"))
            .collect();
        self.say(&format!(
            "step {:>6}  val loss {:.4}{bpb}{extra}",
            r.step, r.val_loss
        ));
    }

    fn sample(&mut self, model: &Llama, step: u64) -> Option<String> {
        let s = self.sampler.as_mut()?(model, step)?;
        self.log("sample", &serde_json::json!({ "step": step, "text": s }));
        self.say(&format!(
            "step {step:>6}  sample: {}",
            s.replace('\n', " ⏎ ")
        ));
        Some(s)
    }

    fn on_checkpoint(&mut self, dir: &Path, step: u64) {
        self.log(
            "checkpoint",
            &serde_json::json!({ "step": step, "dir": dir }),
        );
    }

    fn message(&mut self, text: &str) {
        self.say(text);
    }
}
