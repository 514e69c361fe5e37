//! PPO and GRPO end to end on a tiny model with a rule reward: the policy measurably
//! moves toward what is rewarded within seconds, and a resumed run ends exactly where an
//! unbroken one does.

use std::path::Path;

use candle_core::{Device, Tensor};
use ferrochat_model::{checkpoint, weights, Config, Llama};
use ferrochat_text::Message;
use ferrochat_tokenizer::Tokenizer;
use ferrochat_train::policy::{Prompt, Rollout};
use ferrochat_train::{pg, Algo, PgInputs, PgOptions, Silent};

fn tokenizer() -> Tokenizer {
    let text = "What is two plus two? It is four. Hello there, how are you today? \
                The capital of France is Paris. 你好，今天怎么样？";
    let opts = ferrochat_tokenizer::TrainOptions {
        vocab_size: 300,
        ..Default::default()
    };
    Tokenizer::train((0..30).map(|i| format!("{text} {i}")), &opts).unwrap()
}

/// A random tiny model saved as a chat checkpoint.
fn checkpoint_dir(dir: &Path, tok: &Tokenizer) {
    let cfg = Config::preset("tiny", tok.vocab_size(), 64).unwrap();
    let w = weights::init_weights(&cfg, 7, &Device::Cpu).unwrap();
    checkpoint::save(dir, &cfg, &w, &Default::default(), |d| {
        tok.save(d).unwrap();
        Ok(())
    })
    .unwrap();
}

fn prompts() -> Vec<Vec<Message>> {
    [
        "What is two plus two?",
        "Hello there",
        "The capital of France?",
        "你好",
    ]
    .iter()
    .map(|q| vec![Message::user(*q)])
    .collect()
}

/// Probability that the first answer token is below `limit`, averaged over the prompts.
fn first_token_prob(model_dir: &Path, tok: &Tokenizer, limit: u32) -> f64 {
    let (cfg, w) = checkpoint::load(model_dir, &Device::Cpu).unwrap();
    let m = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
    let mut sum = 0.0;
    for p in prompts() {
        let ids = tok.encode_prompt(&p).unwrap();
        let mut cache = m.new_cache();
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits: Vec<f32> = m
            .forward_cached(&x, &mut cache)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let max = logits.iter().cloned().fold(f32::MIN, f32::max);
        let z: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let low: f64 = logits[..limit as usize]
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum();
        sum += low / z;
    }
    sum / prompts().len() as f64
}

fn options(algo: Algo) -> PgOptions {
    let mut o = match algo {
        Algo::Ppo => PgOptions::ppo(),
        Algo::Grpo { .. } => PgOptions::grpo(),
    };
    o.algo = algo;
    o.iterations = 12;
    o.prompts_per_iter = 8;
    o.minibatch = 8;
    o.max_new_tokens = 8;
    o.lr = 1e-2;
    o.warmup_steps = 0;
    o.kl_coef = 0.01;
    o.target_kl = None;
    o.eval_every = 0;
    o.checkpoint_every = 2;
    o.missing_end_penalty = 0.0;
    o
}

/// Reward: the share of answer tokens below `limit` (half the vocabulary: a rule a
/// random policy meets half the time, so every batch carries signal).
fn rule(limit: u32) -> impl FnMut(&[Prompt], &[Rollout]) -> ferrochat_train::Result<Vec<f64>> {
    move |_, rs: &[Rollout]| {
        Ok(rs
            .iter()
            .map(|r| {
                let a = r.answer_tokens();
                a.iter().filter(|&&t| t < limit).count() as f64 / a.len().max(1) as f64
            })
            .collect())
    }
}

fn run(
    algo: Algo,
    iterations: u64,
    out: &Path,
    base: &Path,
    tok: &Tokenizer,
    resume: bool,
) -> pg::PgSummary {
    let mut o = options(algo);
    o.iterations = iterations;
    let msgs = prompts();
    let inp = PgInputs {
        policy: base,
        tokenizer: tok,
        prompts: &msgs,
        pretrain: None,
        out,
        resume,
        device: &Device::Cpu,
    };
    let mut reward = rule(tok.vocab_size() as u32 / 2);
    pg::train(&o, &inp, &mut reward, None, &mut Silent).unwrap()
}

#[test]
fn ppo_and_grpo_move_the_policy_toward_a_rule_reward() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    checkpoint_dir(&base, &tok);
    let half = tok.vocab_size() as u32 / 2;
    let before = first_token_prob(&base, &tok, half);
    for (name, algo) in [("ppo", Algo::Ppo), ("grpo", Algo::Grpo { group: 4 })] {
        let out = dir.path().join(name);
        let s = run(algo, 12, &out, &base, &tok, false);
        let after = first_token_prob(&out, &tok, half);
        eprintln!(
            "{name}: p(low half) {before:.3} -> {after:.3}, reward {:.3} -> {:.3}, KL {:.3}",
            s.reward_first, s.reward_last, s.kl_last
        );
        assert!(
            after > before + 0.15 && s.reward_last > s.reward_first + 0.1,
            "{name}: p(target) {before:.4} -> {after:.4}, reward {:.3} -> {:.3}",
            s.reward_first,
            s.reward_last
        );
        assert!(s.kl_last.is_finite());
        // the folder is a chat checkpoint (the value head stays beside it)
        let meta = checkpoint::load_meta(&out).unwrap();
        assert_eq!(meta.stage, name);
        assert_eq!(out.join("heads.safetensors").exists(), name == "ppo");
    }
}

#[test]
fn a_resumed_ppo_run_ends_where_an_unbroken_one_does() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    checkpoint_dir(&base, &tok);
    let whole = dir.path().join("whole");
    run(Algo::Ppo, 4, &whole, &base, &tok, false);
    let parts = dir.path().join("parts");
    run(Algo::Ppo, 2, &parts, &base, &tok, false);
    run(Algo::Ppo, 4, &parts, &base, &tok, true);
    let (_, a) = checkpoint::load(&whole, &Device::Cpu).unwrap();
    let (_, b) = checkpoint::load(&parts, &Device::Cpu).unwrap();
    for (name, t) in &a {
        let d: f32 = (t - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(d, 0.0, "{name} differs by {d}");
    }
    let ha = checkpoint::load_tensors(&whole.join("heads.safetensors"), &Device::Cpu).unwrap();
    let hb = checkpoint::load_tensors(&parts.join("heads.safetensors"), &Device::Cpu).unwrap();
    let va: Vec<f32> = ha["value_head.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let vb: Vec<f32> = hb["value_head.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(va, vb);
    assert!(va.iter().any(|&x| x != 0.0), "the value head learned");
}
