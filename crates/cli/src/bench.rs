//! `ferrochat bench train|generate`: speed, measured as a user would see it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use ferrochat_engine::{generate, GenerateOptions, SamplingParams};
use ferrochat_model::{checkpoint, weights, Config, Llama};
use ferrochat_train::optim::{clip_grad_norm, AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Training step throughput (tokens/s) and model-FLOPs utilisation
    Train(TrainArgs),
    /// Prefill and decode tokens/s with the KV cache
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    /// Untie the output projection from the embedding
    #[arg(long)]
    pub untied: bool,
    /// Timed steps (the median is reported)
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Folder for the benchmarked model's config.json (for the PyTorch reference) and results
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A checkpoint; without it a random model of --preset is used
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    /// New tokens per run (greedy, no stop token)
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Train(a) => train(a),
        Command::Generate(a) => gen(a),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Best f32 matmul rate on the model's own shapes: the peak MFU is measured against.
fn matmul_peak(cfg: &Config, rows: usize, device: &Device) -> Result<f64> {
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let mut best: f64 = 0.0;
    for (m, k, n) in [(rows, c, f), (rows, f, c), (rows, c, c)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), device)?;
        let b = Tensor::randn(0f32, 1.0, (k, n), device)?;
        let _ = a.matmul(&b)?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let r = a.matmul(&b)?;
            r.device().synchronize()?;
            times.push(t.elapsed().as_secs_f64());
        }
        best = best.max(2.0 * (m * k * n) as f64 / median(times) / 1e9);
    }
    Ok(best)
}

fn train(a: TrainArgs) -> Result<()> {
    let device = crate::runtime::device(&a.device)?;
    let mut cfg = Config::preset(&a.preset, a.vocab, a.seq)?;
    cfg.tie_word_embeddings = !a.untied;
    let init = weights::init_weights(&cfg, 0, &device)?;
    let params = weights::to_vars(&cfg, &init)?;
    let model = Llama::new(&cfg, &weights::var_tensors(&params, false), &device)?;
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = a.batch * a.seq;
    eprintln!(
        "bench train: preset {} ({:.2}M parameters), batch {} x seq {}, {} threads",
        a.preset,
        cfg.num_params() as f64 / 1e6,
        a.batch,
        a.seq,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
    );
    let mut times = Vec::new();
    let (mut t_fwd, mut t_bwd, mut t_opt) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_loss = 0.0;
    for i in 0..a.warmup + a.steps {
        let x: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..a.vocab as u32))
            .collect();
        let y: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..a.vocab as u32))
            .collect();
        let t = Instant::now();
        let x = Tensor::from_vec(x, (a.batch, a.seq), &device)?;
        let y = Tensor::from_vec(y, (a.batch, a.seq), &device)?;
        let loss = model.loss(&x, &y)?;
        last_loss = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let mut grads = loss.backward()?;
        let t2 = Instant::now();
        clip_grad_norm(&mut grads, &params, 1.0)?;
        opt.step(&grads, 1e-4)?;
        drop(grads);
        let dt = t.elapsed().as_secs_f64();
        if i >= a.warmup {
            times.push(dt);
            t_fwd.push((t1 - t).as_secs_f64());
            t_bwd.push((t2 - t1).as_secs_f64());
            t_opt.push(t2.elapsed().as_secs_f64());
        }
    }
    let step = median(times.clone());
    let tps = n as f64 / step;
    let peak = matmul_peak(&cfg, n, &device)?;
    let achieved = cfg.train_flops_per_token(a.seq) * tps / 1e9;
    let result = serde_json::json!({
        "preset": a.preset, "params": cfg.num_params(), "batch": a.batch, "seq": a.seq,
        "vocab": a.vocab, "tied": !a.untied, "steps": a.steps,
        "step_secs_median": step, "tokens_per_sec": tps,
        "step_secs_min": times.iter().cloned().fold(f64::INFINITY, f64::min),
        "achieved_gflops": achieved, "matmul_peak_gflops": peak, "mfu": achieved / peak,
        "final_loss": last_loss,
        "forward_secs_median": median(t_fwd.clone()),
        "backward_secs_median": median(t_bwd.clone()),
        "clip_and_optimizer_secs_median": median(t_opt.clone()),
    });
    println!(
        "{:.0} tokens/s (median step {:.3}s), {:.1} GFLOP/s = {:.0}% of the measured f32 matmul peak {:.1} GFLOP/s",
        tps,
        step,
        achieved,
        100.0 * achieved / peak,
        peak
    );
    println!(
        "  forward {:.3}s, backward {:.3}s, clip + AdamW {:.3}s (medians)",
        median(t_fwd),
        median(t_bwd),
        median(t_opt)
    );
    println!("{result}");
    if let Some(dir) = a.output {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
        std::fs::write(
            dir.join("bench_train.json"),
            serde_json::to_string_pretty(&result)?,
        )?;
    }
    Ok(())
}

fn gen(a: GenerateArgs) -> Result<()> {
    let device = crate::runtime::device(&a.device)?;
    let (cfg, w) = match &a.model {
        Some(dir) => checkpoint::load(dir, &device)?,
        None => {
            let cfg = Config::preset(&a.preset, a.vocab, (a.prompt_len + a.tokens).max(256))?;
            let w = weights::init_weights(&cfg, 0, &device)?;
            (cfg, w)
        }
    };
    let model = Llama::new(&cfg, &w, &device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let prompt: Vec<u32> = (0..a.prompt_len)
        .map(|_| rng.random_range(0..cfg.vocab_size as u32))
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: a.tokens,
        sampling: SamplingParams::greedy(),
        seed: 0,
        stop: vec![],
    };
    let _ = generate(&model, &prompt, &opts, |_| true)?; // warm-up
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..a.runs.max(1) {
        let g = generate(&model, &prompt, &opts, |_| true)?;
        pre.push(prompt.len() as f64 / g.prefill_secs.max(1e-9));
        dec.push(g.decode_tokens_per_sec());
    }
    let (p, d) = (median(pre), median(dec));
    println!(
        "{:.2}M parameters: prefill {:.0} tokens/s, decode {:.1} tokens/s (batch 1, {}-token prompt, {} new tokens, median of {})",
        cfg.num_params() as f64 / 1e6,
        p,
        d,
        a.prompt_len,
        a.tokens,
        a.runs
    );
    println!(
        "{}",
        serde_json::json!({"params": cfg.num_params(), "prefill_tokens_per_sec": p, "decode_tokens_per_sec": d,
            "prompt_len": a.prompt_len, "new_tokens": a.tokens})
    );
    Ok(())
}
