//! `ferrochat teach`: a model answers prompts and its answers become dialogues for
//! training another model with `sft`.
//!
//! - Sequence-level distillation (Kim & Rush, 2016): a large teacher's answers are the
//!   small student's fine-tuning data, so the student imitates what the teacher says, not
//!   only its next-token distribution on text.
//! - The way back (small helps large): a specialist, say a student fine-tuned on one
//!   skill, answers that skill's prompts; `--judge` keeps only the answers the world's
//!   judge accepts (prompts carry their expectations), and the large model is fine-tuned
//!   on them.
//!
//! Only answers that ended by themselves are kept (one cut at the length limit would
//! teach the student to ramble on).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferrochat_engine::{generate_batch, FinishReason, GenerateOptions, SamplingParams};
use ferrochat_text::{write_atomic, Conversation, Message};

use crate::rl::read_prompts;

#[derive(clap::Args)]
pub struct Args {
    /// The model that answers (a chat checkpoint)
    #[arg(long)]
    pub model: PathBuf,
    /// Prompts, JSON lines: world items (rl_prompts.jsonl, heldout.jsonl) or
    /// {"messages": [...]} ending in a user turn
    #[arg(long)]
    pub prompts: PathBuf,
    /// The dialogues to write (JSON lines, the format `sft --data` reads)
    #[arg(long)]
    pub output: PathBuf,
    /// Only the world items of this skill (arithmetic, fact, poem, ...)
    #[arg(long)]
    pub skill: Option<String>,
    /// Answers per prompt
    #[arg(long, default_value_t = 1)]
    pub per_prompt: usize,
    /// Keep only answers the world's judge passes on every skill it holds them to (needs
    /// world items: prompts without expectations are left out)
    #[arg(long)]
    pub judge: bool,
    /// 0 for greedy (then one answer per prompt)
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Prompts answered together (batched generation)
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: Args) -> Result<()> {
    if a.per_prompt == 0 || a.batch == 0 {
        bail!("--per-prompt and --batch must be at least 1");
    }
    let sampling = crate::runtime::sampling(SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        ..SamplingParams::greedy()
    })?;
    let per_prompt = if a.temperature == 0.0 {
        1
    } else {
        a.per_prompt
    };
    let (tok, model, _) = crate::runtime::open_model(&a.model, &a.device)?;
    let mut prompts = read_prompts(&a.prompts)?;
    if let Some(skill) = &a.skill {
        prompts.retain(|p| {
            p.item.as_ref().is_some_and(|it| {
                serde_json::to_value(it.skill)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    == Some(skill.clone())
            })
        });
        if prompts.is_empty() {
            bail!(
                "{}: no world item has the skill `{skill}`",
                a.prompts.display()
            );
        }
    }
    if a.judge {
        let before = prompts.len();
        prompts.retain(|p| p.item.is_some());
        if prompts.is_empty() {
            bail!(
                "--judge needs world items (prompts with expectations); {} has none",
                a.prompts.display()
            );
        }
        if prompts.len() < before {
            eprintln!(
                "{} prompts without expectations left out (--judge)",
                before - prompts.len()
            );
        }
    }
    let ctx = model.config().max_position_embeddings;
    // (prompt index, its ids), each prompt per_prompt times
    let mut jobs: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut too_long = 0;
    for (i, p) in prompts.iter().enumerate() {
        match tok.encode_prompt_fitting(&p.messages, ctx, a.max_tokens.min(ctx / 2)) {
            Ok(f) => jobs.extend(std::iter::repeat_n((i, f.value), per_prompt)),
            Err(_) => too_long += 1,
        }
    }
    let (mut kept, mut unfinished, mut rejected) = (Vec::new(), 0usize, 0usize);
    let (mut judged, mut n_judged) = (0.0, 0usize);
    for (c, chunk) in jobs.chunks(a.batch).enumerate() {
        let ids: Vec<&[u32]> = chunk.iter().map(|j| j.1.as_slice()).collect();
        let opts: Vec<GenerateOptions> = (0..chunk.len())
            .map(|k| GenerateOptions {
                max_new_tokens: a.max_tokens,
                sampling,
                seed: a.seed.wrapping_add((c * a.batch + k) as u64),
                stop: vec![tok.special().end, tok.special().bos],
                watermark: None,
            })
            .collect();
        let gens = generate_batch(&model, &ids, &opts, |_, _| true)?;
        for ((i, _), g) in chunk.iter().zip(gens) {
            if g.finish != FinishReason::Stop {
                unfinished += 1;
                continue;
            }
            let body: Vec<u32> = g.tokens[..g.tokens.len() - 1].to_vec();
            let answer = tok.decode(&body, false)?.trim().to_string();
            if answer.is_empty() {
                rejected += 1;
                continue;
            }
            let p = &prompts[*i];
            if a.judge {
                let item = p.item.as_ref().expect("judged prompts are world items");
                let v = ferrochat_world::judge_item(item, &answer);
                judged += v.score;
                n_judged += 1;
                if v.zeroed.is_some() || !v.skills.iter().all(|s| s.passed) {
                    rejected += 1;
                    continue;
                }
            }
            let mut messages = p.messages.clone();
            messages.push(Message::assistant(answer));
            kept.push(Conversation::new(messages));
        }
    }
    if kept.is_empty() {
        bail!(
            "no answer was kept ({} prompts, {unfinished} ran to --max-tokens, {rejected} \
             rejected): nothing to train on",
            prompts.len()
        );
    }
    let mut out = String::new();
    for c in &kept {
        out.push_str(&serde_json::to_string(c)?);
        out.push('\n');
    }
    write_atomic(&a.output, out.as_bytes())
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    let answers = jobs.len();
    println!(
        "{} answers to {} prompts: {} kept, {unfinished} ran to --max-tokens, {rejected} {}{}; \
         dialogues written to {}",
        answers,
        prompts.len(),
        kept.len(),
        if a.judge { "failed the judge" } else { "empty" },
        if too_long > 0 {
            format!(", {too_long} prompts too long for the context")
        } else {
            String::new()
        },
        a.output.display()
    );
    if a.judge {
        println!(
            "mean judged score of the {n_judged} finished answers: {:.3}",
            judged / n_judged.max(1) as f64
        );
    }
    Ok(())
}
