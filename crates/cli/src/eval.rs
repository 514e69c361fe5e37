//! `ferrochat eval`: answer the world's held-out prompts, judge them, print the
//! scorecard; `--compare A B` gives the judged win rate of A over B.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferrochat_engine::SamplingParams;
use ferrochat_eval::{evaluate, win_rate, EvalOptions, Judged, PromptStyle, Scorecard};
use ferrochat_model::checkpoint;
use ferrochat_world::{EvalItem, WorldConfig};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Checkpoint folder to evaluate
    #[arg(long, required_unless_present = "compare")]
    pub model: Option<PathBuf>,
    /// Judged win rate of checkpoint A over checkpoint B
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Held-out prompts (heldout.jsonl of `ferrochat world generate`); default: the
    /// world of --world-seed
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub world_seed: u64,
    /// Worked examples in the prompt (GPT-3 style); default 3 for a pretrained base
    /// model, 0 (chat template) for a fine-tuned one
    #[arg(long)]
    pub few_shot: Option<usize>,
    /// Evaluate on at most N items, spread evenly over the skills
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 for greedy
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the JSON results (default: eval.json in the model folder)
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub watermark: crate::runtime::WatermarkArgs,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// What one evaluation produced.
pub struct Outcome {
    pub style: PromptStyle,
    pub card: Scorecard,
    pub judged: Vec<Judged>,
}

pub fn run(a: Args) -> Result<()> {
    let items = load_items(&a)?;
    if let Some(pair) = &a.compare {
        let ra = eval_model(&pair[0], &items, &a)?;
        let rb = eval_model(&pair[1], &items, &a)?;
        let w = win_rate(&ra.judged, &rb.judged);
        println!(
            "{} vs {}: win rate {:.1}% ({} wins, {} ties, {} losses over {} prompts); mean score {:.3} vs {:.3}",
            pair[0].display(),
            pair[1].display(),
            100.0 * w.win_rate,
            w.wins,
            w.ties,
            w.losses,
            w.items,
            ra.card.overall.mean_score,
            rb.card.overall.mean_score
        );
        if let Some(out) = &a.output {
            std::fs::write(out, serde_json::to_string_pretty(&w)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        return Ok(());
    }
    let model = a.model.as_ref().context("--model is required")?;
    let r = eval_model(model, &items, &a)?;
    println!("{}", r.card.markdown());
    let out = a.output.clone().unwrap_or_else(|| model.join("eval.json"));
    write_results(&out, model, &r)?;
    if !a.quiet {
        println!("results: {}", out.display());
    }
    Ok(())
}

pub fn write_results(out: &Path, model: &Path, r: &Outcome) -> Result<()> {
    let json = serde_json::json!({
        "model": model,
        "style": format!("{:?}", r.style),
        "scorecard": r.card,
        "answers": r.judged,
    });
    std::fs::write(out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", out.display()))
}

pub fn load_items(a: &Args) -> Result<Vec<EvalItem>> {
    let mut items: Vec<EvalItem> = match &a.heldout {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l).with_context(|| {
                        format!("{}:{}: not a held-out item", path.display(), i + 1)
                    })
                })
                .collect::<Result<_>>()?
        }
        None => ferrochat_world::heldout(&WorldConfig {
            seed: a.world_seed,
            ..Default::default()
        }),
    };
    anyhow::ensure!(!items.is_empty(), "no held-out items to evaluate");
    if let Some(n) = a.limit {
        items = spread(items, n);
    }
    Ok(items)
}

/// At most `n` items, drawn round-robin over the (skill, language) groups so every
/// group is represented as evenly as the count allows; the order within a group is kept.
fn spread(items: Vec<EvalItem>, n: usize) -> Vec<EvalItem> {
    if n >= items.len() || n == 0 {
        return items;
    }
    let mut groups: Vec<(
        (ferrochat_world::Skill, ferrochat_world::Lang),
        Vec<EvalItem>,
    )> = Vec::new();
    for item in items {
        let key = (item.skill, item.lang);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(item),
            None => groups.push((key, vec![item])),
        }
    }
    let mut queues: Vec<std::collections::VecDeque<EvalItem>> =
        groups.into_iter().map(|(_, g)| g.into()).collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        for q in queues.iter_mut() {
            if out.len() < n {
                if let Some(item) = q.pop_front() {
                    out.push(item);
                }
            }
        }
    }
    out.sort_by_key(|a| (a.skill, a.lang));
    out
}

pub fn eval_model(dir: &Path, items: &[EvalItem], a: &Args) -> Result<Outcome> {
    let (tok, model, _) = crate::runtime::open_model(dir, &a.device)?;
    let meta = checkpoint::load_meta(dir)?;
    let k = a
        .few_shot
        .unwrap_or(if meta.stage == "pretrain" { 3 } else { 0 });
    let style = if k == 0 {
        PromptStyle::Chat
    } else {
        PromptStyle::FewShot { k, seed: a.seed }
    };
    let opts = EvalOptions {
        style: style.clone(),
        max_new_tokens: a.max_tokens,
        sampling: if a.temperature > 0.0 {
            SamplingParams {
                temperature: a.temperature,
                ..SamplingParams::greedy()
            }
        } else {
            SamplingParams::greedy()
        },
        seed: a.seed,
        watermark: a.watermark.get()?,
    };
    let bar = (!a.quiet).then(|| {
        let b = indicatif::ProgressBar::new(items.len() as u64);
        b.set_message(format!("evaluating {}", dir.display()));
        b
    });
    let (card, judged) = evaluate(&model, &tok, items, &opts, |i| {
        if let Some(b) = &bar {
            b.set_position(i as u64)
        }
    })
    .with_context(|| format!("evaluating {}", dir.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(Outcome {
        style,
        card,
        judged,
    })
}
