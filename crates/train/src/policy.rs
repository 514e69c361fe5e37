//! A chat model as a policy in preference and reinforcement fine-tuning (DPO, PPO,
//! GRPO): sampling answers to prompts with the engine (rollouts), the log-probability
//! of each answer token under the policy or the frozen reference, and the KL between
//! the two measured on the policy's own samples.

use candle_core::{Device, Tensor};
use ferrochat_engine::{generate_batch, GenerateOptions, SamplingParams};
use ferrochat_model::Llama;
use ferrochat_text::Message;
use ferrochat_tokenizer::Tokenizer;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::pref::{pad, Answer, Padded};
use crate::rl::token_logprobs;
use crate::{Result, TrainError};

/// A prompt rendered for the policy, leaving room for `max_new` answer tokens.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Its position in the caller's list (prompts that do not fit are left out, so this
    /// is how a reward finds what the prompt asked).
    pub index: usize,
    pub messages: Vec<Message>,
    pub ids: Vec<u32>,
}

/// Renders prompts for answers of up to `max_new` tokens within the model's context,
/// dropping (and counting) those whose last message alone does not fit.
pub fn render_prompts(
    tok: &Tokenizer,
    prompts: &[Vec<Message>],
    ctx: usize,
    max_new: usize,
) -> Result<(Vec<Prompt>, usize)> {
    let mut out = Vec::with_capacity(prompts.len());
    let mut too_long = 0;
    for (index, m) in prompts.iter().enumerate() {
        match tok.encode_prompt_fitting(m, ctx, max_new) {
            Ok(f) => out.push(Prompt {
                index,
                messages: m.clone(),
                ids: f.value,
            }),
            Err(ferrochat_tokenizer::TokenizerError::TooLong(_)) => too_long += 1,
            Err(e) => return Err(e.into()),
        }
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!(
            "no prompt leaves room for a {max_new}-token answer in the context of {ctx} tokens"
        )));
    }
    Ok((out, too_long))
}

/// One sampled answer: the prompt and answer tokens (`answer.ids[prompt_len..]`, the
/// stop token included when it ended), and whether it ended by itself.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// [`Prompt::index`] of the prompt it answers.
    pub prompt: usize,
    pub answer: Answer,
    pub ended: bool,
}

impl Rollout {
    pub fn answer_tokens(&self) -> &[u32] {
        &self.answer.ids[self.answer.prompt_len..]
    }
}

/// How rollouts are sampled.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct RolloutOptions {
    pub max_new_tokens: usize,
    /// 1.0 samples the policy's own distribution, as the policy gradient assumes.
    pub temperature: f32,
}

/// Samples `per_prompt` answers to each prompt in one engine batch, each sequence with
/// its own seed drawn from `rng` (so a resumed run samples the same).
pub fn rollouts(
    model: &Llama,
    prompts: &[&Prompt],
    per_prompt: usize,
    opts: &RolloutOptions,
    stop: &[u32],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Rollout>> {
    let mut seqs: Vec<&[u32]> = Vec::new();
    let mut gen = Vec::new();
    let mut owner = Vec::new();
    for p in prompts {
        for _ in 0..per_prompt {
            seqs.push(&p.ids);
            owner.push(p.index);
            gen.push(GenerateOptions {
                max_new_tokens: opts.max_new_tokens,
                sampling: SamplingParams {
                    temperature: opts.temperature,
                    top_k: 0,
                    top_p: 1.0,
                    ..SamplingParams::default()
                },
                seed: rng.random(),
                stop: stop.to_vec(),
                watermark: None,
            });
        }
    }
    let out = generate_batch(model, &seqs, &gen, |_, _| true)?;
    Ok(out
        .into_iter()
        .zip(seqs.iter().zip(owner))
        .map(|(g, (p, prompt))| {
            let mut ids = p.to_vec();
            ids.extend_from_slice(&g.tokens);
            Rollout {
                prompt,
                answer: Answer {
                    ids,
                    prompt_len: p.len(),
                },
                ended: g.stopped,
            }
        })
        .collect())
}

/// One pass of a model over padded answers.
pub struct AnswerPass {
    /// Log-probability of each row's next token (B, T), zero where the mask is off.
    pub logp: Tensor,
    /// Final hidden states (B * T, C), for a value head.
    pub hidden: Tensor,
    /// Next-token logits (B * T, V).
    pub logits: Tensor,
}

pub fn answer_pass(model: &Llama, p: &Padded) -> Result<AnswerPass> {
    let (b, t) = p.ids.dims2()?;
    let hidden = model.hidden(&p.ids, None)?;
    let logits = model.logits(&hidden)?;
    let lp = token_logprobs(&logits, &p.targets.flatten_all()?)?.reshape((b, t))?;
    Ok(AnswerPass {
        logp: (lp * &p.mask)?,
        hidden,
        logits,
    })
}

/// Summed log-probability of each answer (B): differentiable when `model` records a graph.
pub fn answer_logprobs(model: &Llama, p: &Padded) -> Result<Tensor> {
    Ok(answer_pass(model, p)?.logp.sum(1)?)
}

/// Per-token log-probabilities of answers under a frozen model, without a graph, `batch`
/// answers at a time: one vector per answer, over its answer tokens.
pub fn token_logprobs_of(
    model: &Llama,
    answers: &[&Answer],
    pad_id: u32,
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(answers.len());
    for chunk in answers.chunks(batch.max(1)) {
        let p = pad(chunk, pad_id, device)?;
        let lp: Vec<Vec<f32>> = answer_pass(model, &p)?.logp.detach().to_vec2()?;
        for (a, row) in chunk.iter().zip(lp) {
            out.push(row[a.targets()].to_vec());
        }
    }
    Ok(out)
}

/// KL(policy ‖ reference) per answer, estimated on `n` answers the policy samples to the
/// prompts (the sum over answer tokens of `log π − log π_ref`, averaged over answers):
/// how far a fine-tuned model has moved from where it started.
#[allow(clippy::too_many_arguments)]
pub fn sampled_kl(
    policy: &Llama,
    reference: &Llama,
    prompts: &[Prompt],
    n: usize,
    max_new: usize,
    stop: &[u32],
    pad_id: u32,
    seed: u64,
) -> Result<f64> {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let chosen: Vec<&Prompt> = prompts.iter().take(n.max(1)).collect();
    let opts = RolloutOptions {
        max_new_tokens: max_new,
        temperature: 1.0,
    };
    let rs = rollouts(policy, &chosen, 1, &opts, stop, &mut rng)?;
    let answers: Vec<&Answer> = rs.iter().map(|r| &r.answer).collect();
    let dev = policy.device();
    let lp = token_logprobs_of(policy, &answers, pad_id, 16, dev)?;
    let rp = token_logprobs_of(reference, &answers, pad_id, 16, dev)?;
    let total: f64 = lp
        .iter()
        .zip(&rp)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y) as f64).sum::<f64>())
        .sum();
    Ok(total / rs.len().max(1) as f64)
}
