//! Judged evaluation: a model answers the world's held-out prompts, the world's judge
//! scores each answer, and the scores are gathered per skill and language. A base model
//! is prompted the GPT-3 way, with worked examples; a chat model through its template.

pub mod plot;
mod prompt;
pub mod report;
mod table;

pub use prompt::{few_shot_prompt, PromptStyle};
pub use table::{Cell, Scorecard};

use ferrochat_engine::{generate, GenerateOptions, SamplingParams};
use ferrochat_model::Llama;
use ferrochat_tokenizer::Tokenizer;
use ferrochat_world::{EvalItem, Verdict};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ferrochat_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] ferrochat_tokenizer::TokenizerError),
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub style: PromptStyle,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Plant this watermark in the answers (to measure what it costs).
    pub watermark: Option<ferrochat_engine::Watermark>,
}

/// One judged answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judged {
    pub id: String,
    pub answer: String,
    pub verdict: Verdict,
    /// The answer ended by itself (end of turn, or end of line after few-shot examples)
    /// rather than at the length limit.
    #[serde(default)]
    pub ended: bool,
}

/// One answer, and whether the model ended it itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    pub ended: bool,
}

/// The model's answer to one item (the text after the prompt, trimmed).
pub fn answer(
    model: &Llama,
    tok: &Tokenizer,
    item: &EvalItem,
    opts: &EvalOptions,
    index: u64,
) -> Result<Answer> {
    let s = tok.special();
    let ctx = model.config().max_position_embeddings;
    // leave room for the answer: a prompt may take at most the context minus this
    let room = opts.max_new_tokens.min(ctx / 4).max(1);
    let ids = match &opts.style {
        PromptStyle::Chat => {
            tok.encode_prompt_fitting(&item.messages, ctx, room)
                .map_err(|e| EvalError::Input(format!("item {}: {e}", item.id)))?
                .value
        }
        PromptStyle::FewShot { k, seed } => {
            // as many worked examples as fit, up to k
            let mut k = *k;
            loop {
                let mut ids = vec![s.bos];
                let style = PromptStyle::FewShot { k, seed: *seed };
                ids.extend(tok.encode(&few_shot_prompt(item, &style))?);
                if ids.len() + room <= ctx || k == 0 {
                    break ids;
                }
                k -= 1;
            }
        }
    };
    if ids.len() + 1 >= ctx {
        return Err(EvalError::Input(format!(
            "item {}: the prompt has {} tokens, more than the model's context of {ctx}",
            item.id,
            ids.len()
        )));
    }
    let gen = GenerateOptions {
        max_new_tokens: opts.max_new_tokens,
        sampling: opts.sampling,
        seed: opts.seed.wrapping_add(index),
        stop: vec![s.end, s.bos],
        watermark: opts.watermark,
    };
    let few_shot = matches!(opts.style, PromptStyle::FewShot { .. });
    let mut produced = Vec::new();
    let mut line_ended = false;
    let g = generate(model, &ids, &gen, |t| {
        produced.push(t);
        // a base model's answer ends at the end of its line, as in the examples
        line_ended = few_shot
            && tok
                .decode(&produced, false)
                .map(|x| x.contains('\n'))
                .unwrap_or(false);
        !line_ended
    })?;
    let text = tok.decode(&produced, false)?;
    let text = if few_shot {
        text.split('\n').next().unwrap_or("")
    } else {
        &text
    };
    Ok(Answer {
        text: text.trim().to_string(),
        ended: g.stopped || line_ended,
    })
}

/// Answers and judges every item.
pub fn evaluate(
    model: &Llama,
    tok: &Tokenizer,
    items: &[EvalItem],
    opts: &EvalOptions,
    mut progress: impl FnMut(usize),
) -> Result<(Scorecard, Vec<Judged>)> {
    let mut judged = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let a = answer(model, tok, item, opts, i as u64)?;
        let verdict = ferrochat_world::judge_item(item, &a.text);
        judged.push(Judged {
            id: item.id.clone(),
            answer: a.text,
            verdict,
            ended: a.ended,
        });
        progress(i + 1);
    }
    Ok((Scorecard::from_judged(items, &judged), judged))
}

/// Win rate of A over B on the same items: wins count 1, ties 1/2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WinRate {
    pub items: usize,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    pub win_rate: f64,
}

pub fn win_rate(a: &[Judged], b: &[Judged]) -> WinRate {
    let (mut wins, mut ties, mut losses) = (0, 0, 0);
    for (x, y) in a.iter().zip(b) {
        let (sx, sy) = (x.verdict.score, y.verdict.score);
        if (sx - sy).abs() < 1e-9 {
            ties += 1;
        } else if sx > sy {
            wins += 1;
        } else {
            losses += 1;
        }
    }
    let n = wins + ties + losses;
    WinRate {
        items: n,
        wins,
        ties,
        losses,
        win_rate: (wins as f64 + 0.5 * ties as f64) / n.max(1) as f64,
    }
}
