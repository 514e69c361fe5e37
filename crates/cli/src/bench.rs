//! `ferrochat bench train|generate|ops|...`: speed, measured as a user would see it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use ferrochat_engine::{Batch, GenerateOptions, SamplingParams};
use ferrochat_model::{checkpoint, weights, Config, Llama};
use ferrochat_train::optim::{clip_grad_norm, AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Training step throughput (tokens/s) and model-FLOPs utilisation
    Train(TrainArgs),
    /// Each hot operation on a device against the composite version computed on the CPU
    /// (values and gradients), and its time against the composite one on the same device
    Ops(OpsArgs),
    /// Prefill and decode tokens/s with the KV cache, at batch 1 and 8 (aggregate and per sequence)
    Generate(GenerateArgs),
    /// Watermark detection on the world: model text with and without it, human text, edits
    Watermark(crate::detect::BenchArgs),
    /// The server under concurrent streaming clients: continuous batching vs one request at a time
    Serve(crate::bench_serve::ServeArgs),
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
pub struct OpsArgs {
    /// The model whose layer shapes are used
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Timed runs per operation and version (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Also write the figures here as JSON
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
    /// Tokens in each prompt
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    /// New tokens per sequence and run (greedy, no stop token)
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Sequences decoded together, one measurement per size (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    /// Timed runs per batch size (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// A draft model (same tokenizer): also time speculative decoding at batch 1 against
    /// the target alone, and report how many drafted tokens the target kept
    #[arg(long, requires = "model")]
    pub draft: Option<PathBuf>,
    /// Tokens the draft proposes per round
    #[arg(long, default_value_t = 4)]
    pub draft_k: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Train(a) => train(a),
        Command::Generate(a) => gen(a),
        Command::Ops(a) => ops(a),
        Command::Serve(a) => crate::bench_serve::serve(a),
        Command::Watermark(a) => crate::detect::bench(a),
    }
}

/// Relative difference from the CPU reference above which `bench ops` fails.
const OPS_TOLERANCE: f32 = 1e-3;

fn ops(a: OpsArgs) -> Result<()> {
    use ferrochat_model::ops::check::{check_ops, OpShapes};
    let device = crate::runtime::device(&a.device)?;
    let cfg = Config::preset(&a.preset, a.vocab, a.seq)?;
    let shapes = OpShapes::of(&cfg, a.batch, a.seq);
    let reports = check_ops(&shapes, &device, a.runs)?;
    println!(
        "{} on {}, {} x {} tokens; ms, median of {}; differences relative to the CPU composite",
        a.preset, a.device, a.batch, a.seq, a.runs
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "fwd", "fwd+bwd", "comp fwd", "comp f+b", "fwd diff", "grad diff"
    );
    for r in &reports {
        println!(
            "{:<22} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.1e} {:>9.1e}",
            r.name,
            r.forward_ms,
            r.forward_backward_ms,
            r.composite_forward_ms,
            r.composite_forward_backward_ms,
            r.forward_diff,
            r.gradient_diff
        );
    }
    if let Some(path) = &a.output {
        let json = serde_json::json!({
            "preset": a.preset, "device": a.device, "batch": a.batch, "seq": a.seq,
            "vocab": a.vocab, "ops": reports,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !(r.forward_diff <= OPS_TOLERANCE && r.gradient_diff <= OPS_TOLERANCE))
        .map(|r| r.name.clone())
        .collect();
    if !bad.is_empty() {
        anyhow::bail!(
            "on {} these differ from the CPU reference by more than {OPS_TOLERANCE}: {}",
            a.device,
            bad.join(", ")
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Best matmul rate on the model's own shapes, through the training path's linear
/// layer (`x @ w^T`, the product every projection makes), in the dtype the training
/// step multiplies in (f32, or bf16 operands under autocast): the peak MFU is measured
/// against.
fn matmul_peak(cfg: &Config, rows: usize, device: &Device) -> Result<f64> {
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let dtype = ferrochat_model::ops::autocast_dtype().unwrap_or(candle_core::DType::F32);
    let mut best: f64 = 0.0;
    for (m, k, n) in [(rows, c, f), (rows, f, c), (rows, c, c)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), device)?.to_dtype(dtype)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), device)?.to_dtype(dtype)?;
        let _ = ferrochat_model::ops::linear(&a, &w)?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let r = ferrochat_model::ops::linear(&a, &w)?;
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
    // the forward (and the peak it is measured against) in the training precision
    let autocast = ferrochat_train::trainer::precision().autocast(&device);
    let _mixed = ferrochat_model::ops::autocast(autocast)?;
    let products = autocast.map_or("f32".to_string(), |d| format!("{d:?} (autocast)"));
    eprintln!(
        "bench train: preset {} ({:.2}M parameters), batch {} x seq {}, {} threads, {products} matrix products",
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
        "vocab": a.vocab, "tied": !a.untied, "steps": a.steps, "products": products,
        "step_secs_median": step, "tokens_per_sec": tps,
        "step_secs_min": times.iter().cloned().fold(f64::INFINITY, f64::min),
        "achieved_gflops": achieved, "matmul_peak_gflops": peak, "mfu": achieved / peak,
        "final_loss": last_loss,
        "forward_secs_median": median(t_fwd.clone()),
        "backward_secs_median": median(t_bwd.clone()),
        "clip_and_optimizer_secs_median": median(t_opt.clone()),
    });
    println!(
        "{:.0} tokens/s (median step {:.3}s), {:.1} GFLOP/s = {:.0}% of the measured {products} matmul peak {:.1} GFLOP/s",
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

/// One run at batch size `prompts.len()`: (prefill tokens/s, aggregate decode tokens/s).
/// Prompts are prefilled one after another, then decoded together to the end.
fn gen_run(model: &Llama, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<(f64, f64)> {
    let mut batch = Batch::new(model);
    let t = Instant::now();
    for p in prompts {
        batch.add(p, opts)?;
    }
    model.device().synchronize()?;
    let prefill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tokens = 0usize;
    while !batch.is_empty() {
        tokens += batch.step()?.len();
    }
    let decode = t.elapsed().as_secs_f64();
    // each sequence's first token comes from its prefill's logits
    let decoded = tokens.saturating_sub(prompts.len());
    let prompt_tokens: usize = prompts.iter().map(|p| p.len()).sum();
    Ok((
        prompt_tokens as f64 / prefill.max(1e-9),
        decoded as f64 / decode.max(1e-9),
    ))
}

fn gen(a: GenerateArgs) -> Result<()> {
    let device = crate::runtime::device(&a.device)?;
    let model = match &a.model {
        Some(dir) => checkpoint::load_model(dir, &device)?,
        None => {
            let cfg = Config::preset(&a.preset, a.vocab, (a.prompt_len + a.tokens).max(256))?;
            let w = weights::init_weights(&cfg, 0, &device)?;
            Llama::new(&cfg, &w, &device)?
        }
    };
    let cfg = model.config().clone();
    anyhow::ensure!(a.prompt_len > 0, "--prompt-len must be at least 1");
    anyhow::ensure!(a.tokens > 0, "--tokens must be at least 1");
    anyhow::ensure!(
        a.batch.iter().all(|&b| b > 0),
        "--batch sizes must be at least 1"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let max_batch = a.batch.iter().copied().max().unwrap_or(1);
    let prompts: Vec<Vec<u32>> = (0..max_batch)
        .map(|_| {
            (0..a.prompt_len)
                .map(|_| rng.random_range(0..cfg.vocab_size as u32))
                .collect()
        })
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: a.tokens,
        sampling: SamplingParams::greedy(),
        seed: 0,
        stop: vec![],
        watermark: None,
    };
    let runs = a.runs.max(1);
    eprintln!(
        "bench generate: {:.2}M parameters, {}-token prompts, {} new tokens per sequence, median of {runs}",
        cfg.num_params() as f64 / 1e6,
        a.prompt_len,
        a.tokens,
    );
    let mut rows = Vec::new();
    for &b in &a.batch {
        let _ = gen_run(&model, &prompts[..b], &opts)?; // warm-up
        let (mut pre, mut dec) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (p, d) = gen_run(&model, &prompts[..b], &opts)?;
            pre.push(p);
            dec.push(d);
        }
        let (p, d) = (median(pre), median(dec));
        rows.push(serde_json::json!({
            "batch": b, "prefill_tokens_per_sec": p, "decode_tokens_per_sec": d,
            "decode_tokens_per_sec_per_sequence": d / b as f64,
        }));
    }
    println!(
        "{:>5}  {:>13}  {:>12}  {:>16}  {:>11}",
        "batch", "prefill tok/s", "decode tok/s", "per sequence", "ms per step"
    );
    for r in &rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let b = r["batch"].as_u64().unwrap_or(1);
        let d = f("decode_tokens_per_sec");
        println!(
            "{b:>5}  {:>13.0}  {d:>12.1}  {:>16.1}  {:>11.2}",
            f("prefill_tokens_per_sec"),
            d / b as f64,
            1e3 * b as f64 / d
        );
    }
    let spec = match &a.draft {
        Some(dir) => {
            // real text to continue, where the draft has a chance to guess right
            let target_dir = a.model.as_ref().expect("--draft requires --model");
            let tok = ferrochat_tokenizer::Tokenizer::load(target_dir)?;
            let mut prompt = vec![tok.special().bos];
            prompt.extend(tok.encode("The capital of France is")?);
            Some(speculative(&model, dir, &prompt, &opts, &a, &device)?)
        }
        None => None,
    };
    // the top-level figures are batch 1's, as before batch sizes were measured
    let first = |k: &str| rows.iter().find(|r| r["batch"] == 1).map(|r| r[k].clone());
    println!(
        "{}",
        serde_json::json!({"params": cfg.num_params(), "prompt_len": a.prompt_len,
            "new_tokens": a.tokens, "runs": runs, "speculative": spec,
            "prefill_tokens_per_sec": first("prefill_tokens_per_sec"),
            "decode_tokens_per_sec": first("decode_tokens_per_sec"),
            "batches": rows})
    );
    Ok(())
}

/// Speculative decoding with `draft_dir` against the target alone, batch 1, greedy: the
/// same prompt and tokens, medians of `--runs` each.
fn speculative(
    target: &Llama,
    draft_dir: &std::path::Path,
    prompt: &[u32],
    opts: &GenerateOptions,
    a: &GenerateArgs,
    device: &candle_core::Device,
) -> Result<serde_json::Value> {
    let draft = checkpoint::load_model(draft_dir, device)?;
    let cfg = draft.config().clone();
    let mut alone = Vec::new();
    let mut spec = Vec::new();
    let mut stats = ferrochat_engine::SpecStats::default();
    let mut same = true;
    for _ in 0..a.runs.max(1) + 1 {
        let t = Instant::now();
        let g = ferrochat_engine::generate(target, prompt, opts, |_| true)?;
        alone.push(g.tokens.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (s, st) = ferrochat_engine::generate_speculative(
            target,
            &draft,
            prompt,
            opts,
            a.draft_k,
            |_| true,
        )?;
        spec.push(s.tokens.len() as f64 / t.elapsed().as_secs_f64());
        same &= s.tokens == g.tokens;
        stats = st;
    }
    // the first of each is the warm-up
    let (alone, spec) = (median(alone[1..].to_vec()), median(spec[1..].to_vec()));
    println!(
        "speculative decoding, draft {:.2}M parameters, k {}: {spec:.1} tokens/s against {alone:.1} alone ({:.2}x); \
         {:.0}% of drafted tokens kept, {:.2} tokens per target pass; greedy output identical: {same}",
        cfg.num_params() as f64 / 1e6,
        a.draft_k,
        spec / alone,
        100.0 * stats.acceptance(),
        stats.tokens_per_round(a.tokens),
    );
    Ok(
        serde_json::json!({"draft_params": cfg.num_params(), "k": a.draft_k,
        "tokens_per_sec": spec, "target_alone_tokens_per_sec": alone, "speedup": spec / alone,
        "acceptance": stats.acceptance(), "identical": same}),
    )
}
