//! Preference data as the reward model and DPO see it: every answer of a ranked list
//! appended to its prompt as the assistant's turn (closed by `<|end|>`), fitted to the
//! context, and batched as padded rows that remember where each answer starts and ends.
//! The losses on such groups live here too: the pairwise ranking loss of InstructGPT
//! and the DPO loss, both in their numerically stable `softplus` form.

use candle_core::{Device, Tensor};
use ferrochat_text::RankedComparison;
use ferrochat_tokenizer::Tokenizer;

use crate::Result;

/// One answer to a prompt, rendered: `ids[..prompt_len]` is the prompt up to and
/// including `<|assistant|>`, the rest the answer and its `<|end|>` (cut when too long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
}

impl Answer {
    /// Position of the last token (where a scoring model reads its score).
    pub fn last(&self) -> usize {
        self.ids.len() - 1
    }

    /// The positions whose next token belongs to the answer: where per-token
    /// log-probabilities, values and advantages of the answer sit in a row of [`pad`].
    pub fn targets(&self) -> std::ops::Range<usize> {
        self.prompt_len.saturating_sub(1)..self.ids.len() - 1
    }
}

/// The answers of one prompt, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub answers: Vec<Answer>,
}

impl Group {
    /// Every (better, worse) pair of answer indices, C(K, 2) of them.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let k = self.answers.len();
        (0..k)
            .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
            .collect()
    }
}

/// How the records fitted the context.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FitStats {
    pub records: usize,
    pub pairs: usize,
    /// Records whose prompt lost old turns, or whose answers were cut, to fit.
    pub truncated: usize,
    /// Records left out: the last user message alone does not fit.
    pub too_long: usize,
}

/// Renders preference records into groups of at most `max_len` tokens per answer. The
/// prompt keeps room for the answers (up to half the context); longer answers are cut
/// at a token boundary, so the score is read inside the answer, never in the prompt.
pub fn encode_groups(
    tok: &Tokenizer,
    records: &[RankedComparison],
    max_len: usize,
) -> Result<(Vec<Group>, FitStats)> {
    let end = tok.special().end;
    let mut stats = FitStats::default();
    let mut groups = Vec::with_capacity(records.len());
    for r in records {
        stats.records += 1;
        let answers: Vec<Vec<u32>> = r
            .ranked
            .iter()
            .map(|a| {
                // an answer is message text: special-token strings in it stay plain
                let mut ids = tok.encode_plain(a)?;
                ids.push(end);
                Ok(ids)
            })
            .collect::<Result<_>>()?;
        let longest = answers.iter().map(Vec::len).max().unwrap_or(1);
        let reserve = longest.min(max_len / 2).max(1);
        let prompt = match tok.encode_prompt_fitting(&r.prompt, max_len, reserve) {
            Ok(p) => p,
            Err(ferrochat_tokenizer::TokenizerError::TooLong(_)) => {
                stats.too_long += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let room = max_len - prompt.value.len();
        if prompt.dropped > 0 || longest > room {
            stats.truncated += 1;
        }
        let answers: Vec<Answer> = answers
            .into_iter()
            .map(|a| {
                let mut ids = prompt.value.clone();
                ids.extend_from_slice(&a[..a.len().min(room)]);
                Answer {
                    ids,
                    prompt_len: prompt.value.len(),
                }
            })
            .collect();
        let group = Group { answers };
        stats.pairs += group.pairs().len();
        groups.push(group);
    }
    Ok((groups, stats))
}

/// Answers as one padded batch: ids (B, T) u32, each row's last real position, and
/// each row's answer mask for next-token log-probabilities: `mask[b][t]` is true when
/// the token at `t + 1` belongs to the answer (so it lines up with the logits at `t`).
pub struct Padded {
    pub ids: Tensor,
    pub last: Vec<usize>,
    pub targets: Tensor,
    pub mask: Tensor,
    pub answer_tokens: usize,
}

/// Pads answers into one batch with `pad` (padding sits after each row's end, where
/// causal attention keeps it from touching real positions).
pub fn pad(answers: &[&Answer], pad: u32, device: &Device) -> Result<Padded> {
    let t = answers.iter().map(|a| a.ids.len()).max().unwrap_or(1);
    let b = answers.len();
    let mut ids = Vec::with_capacity(b * t);
    let mut targets = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    let mut answer_tokens = 0;
    for a in answers {
        let n = a.ids.len();
        ids.extend_from_slice(&a.ids);
        ids.extend(std::iter::repeat_n(pad, t - n));
        for i in 0..t {
            let next = a.ids.get(i + 1).copied();
            targets.push(next.unwrap_or(pad));
            let on = next.is_some() && i + 1 >= a.prompt_len;
            mask.push(if on { 1f32 } else { 0.0 });
            answer_tokens += usize::from(on);
        }
    }
    Ok(Padded {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        last: answers.iter().map(|a| a.last()).collect(),
        targets: Tensor::from_vec(targets, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
        answer_tokens,
    })
}

/// `-log σ(x)` elementwise, stable for large |x|: `relu(-x) + log(1 + exp(-|x|))`.
pub fn neg_log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.neg()?.relu()? + soft)?)
}

/// The share of pairs a model orders right from their margins `score(chosen) -
/// score(rejected)`: a positive margin is right, a tie is a coin flip (half right);
/// 0 for no pairs.
pub fn pairwise_accuracy(margins: impl IntoIterator<Item = f64>) -> f64 {
    let (mut right, mut n) = (0.0, 0usize);
    for m in margins {
        right += if m > 0.0 {
            1.0
        } else if m == 0.0 {
            0.5
        } else {
            0.0
        };
        n += 1;
    }
    right / n.max(1) as f64
}

/// The ranking loss over groups whose answers' scores sit in `scores` (N) in group order:
/// `-log σ(r_better - r_worse)` averaged over each group's C(K, 2) pairs, then over groups
/// (InstructGPT: a ranked list counts once, however many pairs it gives). Returns the
/// loss and the share of pairs ordered correctly.
pub fn ranking_loss(scores: &Tensor, groups: &[&Group]) -> Result<(Tensor, f64)> {
    let dev = scores.device();
    let (mut win, mut lose, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0u32;
    for g in groups {
        let pairs = g.pairs();
        for (i, j) in &pairs {
            win.push(offset + *i as u32);
            lose.push(offset + *j as u32);
            weight.push(1.0 / (pairs.len() as f32 * groups.len() as f32));
        }
        offset += g.answers.len() as u32;
    }
    let w = Tensor::new(win.as_slice(), dev)?;
    let l = Tensor::new(lose.as_slice(), dev)?;
    let margin = (scores.index_select(&w, 0)? - scores.index_select(&l, 0)?)?;
    let correct = margin
        .to_vec1::<f32>()?
        .iter()
        .filter(|&&m| m > 0.0)
        .count() as f64
        / win.len().max(1) as f64;
    let weight = Tensor::new(weight.as_slice(), dev)?;
    let loss = (neg_log_sigmoid(&margin)? * weight)?.sum_all()?;
    Ok((loss, correct))
}

/// The DPO loss of pairs from summed answer log-probabilities under the policy and the
/// frozen reference: mean of `-log σ(β ((π_c - ρ_c) - (π_r - ρ_r)))`. Returns the loss and
/// the implicit reward margins `β ((π_c - ρ_c) - (π_r - ρ_r))`.
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    beta: f64,
) -> Result<(Tensor, Tensor)> {
    let chosen = (policy_chosen - ref_chosen)?;
    let rejected = (policy_rejected - ref_rejected)?;
    let margin = ((chosen - rejected)? * beta)?;
    let loss = neg_log_sigmoid(&margin)?.mean_all()?;
    Ok((loss, margin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrochat_text::Message;

    #[test]
    fn pairwise_accuracy_counts_a_tie_as_half() {
        assert_eq!(pairwise_accuracy([1.0, 0.0, -1.0, 2.0]), 0.625);
        assert_eq!(pairwise_accuracy(std::iter::empty()), 0.0);
    }

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn neg_log_sigmoid_is_stable_and_right() {
        let v: Vec<f32> = neg_log_sigmoid(&t(&[0.0, 2.0, -3.0, 100.0, -100.0]))
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = [
            2f32.ln(),
            (1.0 + (-2f32).exp()).ln(),
            (1.0 + 3f32.exp()).ln(),
            0.0,
            100.0,
        ];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{v:?} vs {want:?}");
        }
    }

    #[test]
    fn ranking_loss_on_toy_rewards_matches_hand_computation() {
        let g3 = Group {
            answers: vec![
                Answer {
                    ids: vec![1],
                    prompt_len: 0
                };
                3
            ],
        };
        let g2 = Group {
            answers: vec![
                Answer {
                    ids: vec![1],
                    prompt_len: 0
                };
                2
            ],
        };
        // group 1 scores (best first) 2, 0, 1; group 2 scores 0.5, 1.5
        let scores = t(&[2.0, 0.0, 1.0, 0.5, 1.5]);
        let (loss, acc) = ranking_loss(&scores, &[&g3, &g2]).unwrap();
        let nls = |x: f64| (1.0 + (-x).exp()).ln();
        let g1 = (nls(2.0) + nls(1.0) + nls(-1.0)) / 3.0;
        let g2 = nls(-1.0);
        let want = (g1 + g2) / 2.0;
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!((acc - 2.0 / 4.0).abs() < 1e-9, "{acc}");
    }

    #[test]
    fn dpo_loss_matches_hand_computation() {
        let (loss, margin) = dpo_loss(
            &t(&[-10.0, -4.0]),
            &t(&[-12.0, -3.0]),
            &t(&[-11.0, -4.0]),
            &t(&[-11.0, -4.0]),
            0.5,
        )
        .unwrap();
        // pair 1: ((-10+11) - (-12+11)) * 0.5 = 1.0; pair 2: (0 - 1) * 0.5 = -0.5
        let m: Vec<f32> = margin.to_vec1().unwrap();
        assert_eq!(m, vec![1.0, -0.5]);
        let nls = |x: f64| (1.0 + (-x).exp()).ln();
        let want = (nls(1.0) + nls(-0.5)) / 2.0;
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn groups_fit_the_context_and_masks_cover_only_answers() {
        let text = "What is two plus two? It is four. Hello there, how are you today?";
        let opts = ferrochat_tokenizer::TrainOptions {
            vocab_size: 300,
            ..Default::default()
        };
        let tok = Tokenizer::train((0..30).map(|i| format!("{text} {i}")), &opts).unwrap();
        let rec = RankedComparison {
            prompt: vec![Message::user("What is two plus two?")],
            ranked: vec![
                "It is four.".into(),
                "Hello there, how are you today? ".repeat(9),
            ],
        };
        let (groups, stats) = encode_groups(&tok, &[rec], 40).unwrap();
        assert_eq!((stats.records, stats.pairs, stats.truncated), (1, 1, 1));
        let g = &groups[0];
        assert!(g.answers.iter().all(|a| a.ids.len() <= 40));
        let short = &g.answers[0];
        assert_eq!(*short.ids.last().unwrap(), tok.special().end);
        assert_eq!(
            tok.decode(&short.ids[short.prompt_len..], true).unwrap(),
            "It is four.<|end|>"
        );
        let p = pad(
            &[&g.answers[0], &g.answers[1]],
            tok.special().pad,
            &Device::Cpu,
        )
        .unwrap();
        let mask: Vec<Vec<f32>> = p.mask.to_vec2().unwrap();
        let targets: Vec<Vec<u32>> = p.targets.to_vec2().unwrap();
        let picked: Vec<u32> = (0..targets[0].len())
            .filter(|&i| mask[0][i] > 0.0)
            .map(|i| targets[0][i])
            .collect();
        assert_eq!(picked, short.ids[short.prompt_len..].to_vec());
        assert_eq!(p.last, vec![short.ids.len() - 1, 39]);
        let too_long = RankedComparison {
            prompt: vec![Message::user("Hello there, how are you today? ".repeat(20))],
            ranked: vec!["a".into(), "b".into()],
        };
        let (g, s) = encode_groups(&tok, &[too_long], 40).unwrap();
        assert!(g.is_empty() && s.too_long == 1);
    }
}
