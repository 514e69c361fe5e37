//! `ferrochat ppo` (against a reward model) and `ferrochat grpo` (against the world's
//! judge, a verifiable reward): reinforcement fine-tuning of a chat model. Both watch the
//! policy on held-out prompts as they go, with the judge and (PPO) the reward model, and
//! say so when the reward model's score rises while the judged score falls.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferrochat_engine::SamplingParams;
use ferrochat_eval::{EvalOptions, PromptStyle};
use ferrochat_model::Llama;
use ferrochat_text::{Message, Role};
use ferrochat_tokenizer::Tokenizer;
use ferrochat_train::dist;
use ferrochat_train::pg::Monitor;
use ferrochat_train::policy::{Prompt, Rollout};
use ferrochat_train::{
    rank_zero, Algo, ConsoleHooks, ModelReward, PgInputs, PgOptions, PgSummary, Reward,
};
use ferrochat_world::EvalItem;

/// What PPO and GRPO share on the command line.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// The chat (SFT) checkpoint to start from; it is also the frozen reference
    #[arg(long)]
    pub policy: PathBuf,
    /// Prompts, JSON lines: world items (`rl_prompts.jsonl`) or {"messages":[..., user turn]}
    #[arg(long)]
    pub prompts: PathBuf,
    /// Checkpoint folder to write
    #[arg(long)]
    pub output: PathBuf,
    /// Rollout batches
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Prompts per iteration
    #[arg(long)]
    pub prompts_per_iter: Option<usize>,
    /// Answers per optimizer step
    #[arg(long)]
    pub minibatch: Option<usize>,
    /// Passes over each iteration's rollouts
    #[arg(long)]
    pub ppo_epochs: Option<usize>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Sampling temperature of rollouts
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub clip_range: Option<f64>,
    /// PPO: initial per-token KL penalty; GRPO: weight of the KL term
    #[arg(long)]
    pub kl_coef: Option<f64>,
    /// Subtracted from the reward of answers that hit the length limit
    #[arg(long)]
    pub missing_end_penalty: Option<f64>,
    /// Prompts held out (the last ones of --prompts) to watch the policy on
    #[arg(long, default_value_t = 32)]
    pub val_prompts: usize,
    /// Iterations between looks at the held-out prompts (0: start and end only)
    #[arg(long)]
    pub eval_every: Option<u64>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data-parallel processes (started by `mpirun -np N`; needs the `mpi` build): each
    /// answers its share of every iteration's prompts and trains on its share of every
    /// minibatch
    #[arg(long)]
    pub world_size: Option<usize>,
}

#[derive(clap::Args, Clone)]
pub struct PpoArgs {
    #[command(flatten)]
    pub common: Common,
    /// The reward model (from `ferrochat reward`)
    #[arg(long)]
    pub reward: PathBuf,
    /// KL per answer (nats) the adaptive controller aims for (0: a fixed coefficient)
    #[arg(long, default_value_t = 4.0)]
    pub target_kl: f64,
    /// PPO-ptx: weight of a pretraining loss mixed into every update (needs --pretrain-data)
    #[arg(long, default_value_t = 0.0)]
    pub ptx_coef: f64,
    /// Token shards for --ptx-coef
    #[arg(long)]
    pub pretrain_data: Option<PathBuf>,
    /// Keep raw rewards (no running normalisation)
    #[arg(long)]
    pub no_reward_norm: bool,
}

#[derive(clap::Args, Clone)]
pub struct GrpoArgs {
    #[command(flatten)]
    pub common: Common,
    /// Answers sampled per prompt (the group their rewards are compared within)
    #[arg(long, default_value_t = 4)]
    pub group: usize,
}

impl Common {
    fn apply(&self, o: &mut PgOptions) {
        macro_rules! set {
            ($($f:ident => $g:ident),*) => { $( if let Some(v) = self.$f { o.$g = v; } )* };
        }
        set!(iterations => iterations, prompts_per_iter => prompts_per_iter,
             minibatch => minibatch, ppo_epochs => ppo_epochs, max_new_tokens => max_new_tokens,
             lr => lr, temperature => temperature, clip_range => clip_range, kl_coef => kl_coef,
             missing_end_penalty => missing_end_penalty, eval_every => eval_every,
             checkpoint_every => checkpoint_every);
        o.seed = self.seed;
    }
}

/// A prompt for reinforcement learning: its messages and, for world items, what the
/// judge expects of the answer.
pub struct RlPrompt {
    pub messages: Vec<Message>,
    pub item: Option<EvalItem>,
}

/// Reads prompts: world items or plain `{"messages": [...]}` ending in a user turn.
pub fn read_prompts(path: &Path) -> Result<Vec<RlPrompt>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let p = if v.get("expect").is_some() {
            let item: EvalItem =
                serde_json::from_value(v).with_context(|| format!("{}: not a world item", at()))?;
            RlPrompt {
                messages: item.messages.clone(),
                item: Some(item),
            }
        } else {
            let messages: Vec<Message> = serde_json::from_value(v["messages"].clone())
                .with_context(|| format!("{}: expected {{\"messages\": [...]}}", at()))?;
            RlPrompt {
                messages,
                item: None,
            }
        };
        if p.messages.last().map(|m| m.role) != Some(Role::User) {
            bail!("{}: the prompt must end with a user message", at());
        }
        out.push(p);
    }
    anyhow::ensure!(!out.is_empty(), "{}: no prompts", path.display());
    Ok(out)
}

/// The judged score of each rollout (0 for prompts without world expectations).
fn judge_rollouts(
    tok: &Tokenizer,
    all: &[RlPrompt],
    rollouts: &[Rollout],
) -> ferrochat_train::Result<Vec<f64>> {
    let end = tok.special().end;
    rollouts
        .iter()
        .map(|r| {
            let ids: Vec<u32> = r
                .answer_tokens()
                .iter()
                .copied()
                .filter(|&t| t != end)
                .collect();
            let text = tok.decode(&ids, false)?;
            Ok(all[r.prompt]
                .item
                .as_ref()
                .map(|it| ferrochat_world::judge_item(it, text.trim()).score)
                .unwrap_or(0.0))
        })
        .collect()
}

/// Greedy answers to the held-out items: the judged mean and, given a reward model, its
/// mean score of the same answers.
fn watch(
    model: &Llama,
    tok: &Tokenizer,
    items: &[EvalItem],
    rm: Option<&Llama>,
) -> ferrochat_train::Result<Vec<(String, f64)>> {
    let opts = EvalOptions {
        style: PromptStyle::Chat,
        max_new_tokens: 64,
        sampling: SamplingParams::greedy(),
        seed: 0,
        watermark: None,
    };
    let (card, judged) = ferrochat_eval::evaluate(model, tok, items, &opts, |_| {})
        .map_err(|e| ferrochat_train::TrainError::Data(e.to_string()))?;
    let mut out = vec![("judged".to_string(), card.overall.mean_score)];
    if let Some(rm) = rm {
        let texts: Vec<_> = items
            .iter()
            .zip(&judged)
            .map(|(it, j)| (it.messages.clone(), j.answer.clone()))
            .collect();
        let s = ferrochat_train::reward::score_texts(rm, tok, &texts)?;
        let mean = s.iter().map(|&x| x as f64).sum::<f64>() / s.len().max(1) as f64;
        out.push(("reward".to_string(), mean));
    }
    Ok(out)
}

fn print_summary(s: &PgSummary, out: &Path) {
    println!(
        "{} iterations ({} updates) in {:.0}s; rollout reward {:.3} -> {:.3}; KL to the reference {:.2} nats per answer (coef {:.3}); {:.0}% of answers ended",
        s.iterations, s.steps, s.elapsed_secs, s.reward_first, s.reward_last, s.kl_last, s.kl_coef, 100.0 * s.ended_last
    );
    let show = |v: &[(String, f64)]| {
        v.iter()
            .map(|(k, x)| format!("{k} {x:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "held-out prompts: {} -> {}",
        show(&s.monitor_first),
        show(&s.monitor_last)
    );
    if s.reward_hacking {
        println!(
            "warning: the reward model's score rose while the judged score fell (reward hacking?)"
        );
    }
    println!("checkpoint: {}", out.display());
}

fn split(prompts: Vec<RlPrompt>, val: usize) -> (Vec<RlPrompt>, Vec<EvalItem>) {
    let mut prompts = prompts;
    let n = val.min(prompts.len() / 2);
    let held = prompts.split_off(prompts.len() - n);
    (prompts, held.into_iter().filter_map(|p| p.item).collect())
}

/// Writes the summary beside the checkpoint (`ppo.json`, `grpo.json`).
fn save_summary(s: &PgSummary, c: &Common, name: &str) -> Result<()> {
    let path = c.output.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(s)?)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn ppo(a: PpoArgs) -> Result<()> {
    let s = train_ppo(&a)?;
    if !a.common.quiet && dist::world().is_main() {
        print_summary(&s, &a.common.output);
    }
    Ok(())
}

pub fn train_ppo(a: &PpoArgs) -> Result<PgSummary> {
    let c = &a.common;
    let device = crate::runtime::device(&c.device)?;
    let tok = Tokenizer::load(&ferrochat_model::checkpoint::resolve(&c.policy)?)?;
    let (rm_tok, rm, _) = crate::runtime::open_model(&a.reward, &c.device)?;
    if !rm.config().is_classifier() {
        bail!(
            "{} is not a reward model (train one with `ferrochat reward`)",
            a.reward.display()
        );
    }
    if rm_tok.vocab_size() != tok.vocab_size() {
        bail!("the reward model's tokenizer differs from the policy's");
    }
    let (train, held) = split(read_prompts(&c.prompts)?, c.val_prompts);
    let mut o = PgOptions::ppo();
    c.apply(&mut o);
    o.target_kl = (a.target_kl > 0.0).then_some(a.target_kl);
    o.ptx_coef = a.ptx_coef;
    o.normalise_reward = !a.no_reward_norm;
    let mut reward = ModelReward {
        model: &rm,
        pad_id: tok.special().pad,
    };
    let run = PgRun {
        c,
        opts: &o,
        tok: &tok,
        train: &train,
        held: &held,
        pretrain: a.pretrain_data.as_deref(),
        device: &device,
    };
    run.go(&mut reward, Some(&rm), "ppo")
}

/// What [`train_ppo`] and [`train_grpo`] hand the shared loop.
struct PgRun<'a> {
    c: &'a Common,
    opts: &'a PgOptions,
    tok: &'a Tokenizer,
    train: &'a [RlPrompt],
    held: &'a [EvalItem],
    pretrain: Option<&'a Path>,
    device: &'a candle_core::Device,
}

impl PgRun<'_> {
    /// Trains, watching the held-out prompts (with `rm` too, when given), and writes
    /// `<name>.json` beside the checkpoint.
    fn go(&self, reward: &mut dyn Reward, rm: Option<&Llama>, name: &str) -> Result<PgSummary> {
        let c = self.c;
        let msgs: Vec<Vec<Message>> = self.train.iter().map(|p| p.messages.clone()).collect();
        std::fs::create_dir_all(&c.output)
            .with_context(|| format!("creating {}", c.output.display()))?;
        let inp = PgInputs {
            policy: &c.policy,
            tokenizer: self.tok,
            prompts: &msgs,
            pretrain: self.pretrain,
            out: &c.output,
            resume: c.resume,
            device: self.device,
        };
        let mut mon = |m: &Llama| watch(m, self.tok, self.held, rm);
        let monitor: Option<&mut Monitor> = if self.held.is_empty() {
            None
        } else {
            Some(&mut mon)
        };
        let mut console = ConsoleHooks::new(c.quiet, Some(c.output.join("metrics.jsonl")));
        let hooks = rank_zero(&mut console);
        let s = ferrochat_train::pg::train(self.opts, &inp, reward, monitor, hooks)?;
        if dist::world().is_main() {
            save_summary(&s, c, name)?;
        }
        Ok(s)
    }
}

pub fn grpo(a: GrpoArgs) -> Result<()> {
    let s = train_grpo(&a)?;
    if !a.common.quiet && dist::world().is_main() {
        print_summary(&s, &a.common.output);
    }
    Ok(())
}

pub fn train_grpo(a: &GrpoArgs) -> Result<PgSummary> {
    let c = &a.common;
    let device = crate::runtime::device(&c.device)?;
    let tok = Tokenizer::load(&ferrochat_model::checkpoint::resolve(&c.policy)?)?;
    let (train, held) = split(read_prompts(&c.prompts)?, c.val_prompts);
    if train.iter().any(|p| p.item.is_none()) {
        bail!(
            "{}: GRPO's reward is the world's judge, so every prompt must be a world item (with \"expect\")",
            c.prompts.display()
        );
    }
    let mut o = PgOptions::grpo();
    c.apply(&mut o);
    o.algo = Algo::Grpo { group: a.group };
    let mut reward = |_: &[Prompt], rs: &[Rollout]| judge_rollouts(&tok, &train, rs);
    let run = PgRun {
        c,
        opts: &o,
        tok: &tok,
        train: &train,
        held: &held,
        pretrain: None,
        device: &device,
    };
    run.go(&mut reward, None, "grpo")
}
