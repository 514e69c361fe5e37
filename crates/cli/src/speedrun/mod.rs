//! `ferrochat speedrun`: the whole pipeline on the built-in world, stage by stage into
//! one run folder, ending in a model and `report.md`. A stage whose output is already
//! complete is kept, so an interrupted speedrun continues where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ferrochat_tokenizer::Tokenizer;

mod plan;
mod report;

use plan::plan;
use report::Report;

#[derive(clap::Args)]
pub struct Args {
    /// The run folder
    #[arg(long, default_value = "runs/speedrun")]
    pub output: PathBuf,
    /// A one-minute run with a tiny model (for tests and a first look)
    #[arg(long)]
    pub quick: bool,
    /// Start over instead of keeping finished stages
    #[arg(long)]
    pub fresh: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn stage(quiet: bool, name: &str) {
    if !quiet {
        eprintln!("\n== {name} ==");
    }
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let out = a.output.clone();
    if a.fresh && out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let p = plan(&a);
    let mut report = Report::default();

    stage(a.quiet, "world");
    let world_dir = out.join("world");
    let t = Instant::now();
    // a world written by an older version lacks the newer files: the same seed writes
    // the same old ones again, plus the new
    let complete = ["world.json", "comparisons_val.jsonl", "rl_prompts.jsonl"]
        .iter()
        .all(|f| world_dir.join(f).exists());
    if !complete {
        ferrochat_world::generate(&p.world, &world_dir)
            .with_context(|| format!("generating the world into {}", world_dir.display()))?;
    }
    report.world = std::fs::read_to_string(world_dir.join("world.json")).ok();
    report.times.push(("world", t.elapsed().as_secs_f64()));
    let pretrain_txt = world_dir.join("pretrain.txt");

    stage(a.quiet, "tokenizer");
    let t = Instant::now();
    let tok_dir = out.join("tokenizer");
    let tok = match Tokenizer::load(&tok_dir) {
        Ok(t) => t,
        Err(_) => {
            let tok = crate::tokenizer::train(
                std::slice::from_ref(&pretrain_txt),
                p.vocab,
                50_000_000,
                "text",
                "text",
            )?;
            tok.save(&tok_dir)?;
            tok
        }
    };
    report.tokenizer = Some(tokenizer_stats(&tok)?);
    report.times.push(("tokenizer", t.elapsed().as_secs_f64()));

    stage(a.quiet, "data");
    let t = Instant::now();
    let data_dir = out.join("data");
    if !data_dir.join("manifest.json").exists() {
        let args = crate::data::PrepareArgs {
            tokenizer: tok_dir.clone(),
            output: data_dir.clone(),
            val_fraction: 0.02,
            json_field: "text".into(),
            parquet_column: "text".into(),
            // the world's prose is one paragraph per document
            split_above: 16 << 10,
            seed: a.seed,
            quiet: a.quiet,
            inputs: vec![pretrain_txt.clone()],
        };
        crate::data::prepare(&args, &tok)?;
    }
    report.times.push(("data", t.elapsed().as_secs_f64()));

    stage(a.quiet, "pretrain");
    let t = Instant::now();
    let summary = crate::pretrain::train(&p.pretrain)?;
    report.pretrain = Some(summary);
    report.times.push(("pretrain", t.elapsed().as_secs_f64()));
    // the report card grows as the stages finish (an interrupted run still has one)
    crate::report::update(&out);

    stage(a.quiet, "samples");
    let base = out.join("base");
    report.samples = samples(&base, &a.device)?;
    if !a.quiet {
        for (prompt, text) in &report.samples {
            eprintln!("  {prompt:?} -> {text:?}");
        }
    }

    stage(a.quiet, "eval (base model, few-shot)");
    let t = Instant::now();
    let mut eval_args = crate::eval::Args {
        model: Some(base.clone()),
        compare: None,
        heldout: Some(world_dir.join("heldout.jsonl")),
        world_seed: a.seed,
        few_shot: Some(3),
        limit: Some(p.eval_items),
        max_tokens: 64,
        temperature: 0.0,
        seed: a.seed,
        output: None,
        quiet: a.quiet,
        device: a.device.clone(),
        watermark: Default::default(),
    };
    let items = crate::eval::load_items(&eval_args)?;
    let outcome = crate::eval::eval_model(&base, &items, &eval_args)?;
    crate::eval::write_results(&out.join("eval_base.json"), &base, &outcome)?;
    report.eval_base = Some(outcome.card);
    report.times.push(("eval base", t.elapsed().as_secs_f64()));

    stage(a.quiet, "sft");
    let t = Instant::now();
    report.sft = Some(crate::sft::train(&p.sft)?);
    report.times.push(("sft", t.elapsed().as_secs_f64()));
    crate::report::update(&out);

    stage(a.quiet, "eval (chat model)");
    let t = Instant::now();
    let chat = p.sft.output.clone();
    eval_args.few_shot = Some(0);
    let sft_outcome = crate::eval::eval_model(&chat, &items, &eval_args)?;
    crate::eval::write_results(&out.join("eval_sft.json"), &chat, &sft_outcome)?;
    report.eval_sft = Some(sft_outcome.card.clone());
    report.times.push(("eval sft", t.elapsed().as_secs_f64()));

    stage(a.quiet, "reward model");
    let t = Instant::now();
    report.reward = Some(crate::reward::train(&p.reward)?);
    report
        .times
        .push(("reward model", t.elapsed().as_secs_f64()));
    crate::report::update(&out);

    stage(a.quiet, "ppo");
    let t = Instant::now();
    report.ppo = Some(crate::rl::train_ppo(&p.ppo)?);
    report.times.push(("ppo", t.elapsed().as_secs_f64()));
    crate::report::update(&out);

    stage(a.quiet, "dpo");
    let t = Instant::now();
    report.dpo = Some(crate::dpo::train(&p.dpo)?);
    report.times.push(("dpo", t.elapsed().as_secs_f64()));
    crate::report::update(&out);

    stage(a.quiet, "grpo");
    let t = Instant::now();
    report.grpo = Some(crate::rl::train_grpo(&p.grpo)?);
    report.times.push(("grpo", t.elapsed().as_secs_f64()));
    crate::report::update(&out);

    stage(a.quiet, "eval (aligned models)");
    let t = Instant::now();
    let mut best = (sft_outcome.card.overall.mean_score, "SFT", chat.clone());
    for (name, dir) in [
        ("PPO", &p.ppo.common.output),
        ("DPO", &p.dpo.output),
        ("GRPO", &p.grpo.common.output),
    ] {
        let o = crate::eval::eval_model(dir, &items, &eval_args)?;
        let file = format!("eval_{}.json", name.to_lowercase());
        crate::eval::write_results(&out.join(file), dir, &o)?;
        report.wins.push((
            name,
            ferrochat_eval::win_rate(&o.judged, &sft_outcome.judged),
        ));
        if o.card.overall.mean_score > best.0 {
            best = (o.card.overall.mean_score, name, dir.clone());
        }
        report.aligned.push((name, o.card));
    }
    report
        .times
        .push(("eval aligned", t.elapsed().as_secs_f64()));

    stage(
        a.quiet,
        "serve (continuous batching vs one request at a time)",
    );
    let t = Instant::now();
    let bench = crate::bench_serve::ServeArgs {
        model: best.2.clone(),
        max_batch: None,
        device: a.device.clone(),
        ..p.serve.clone()
    };
    let figures = crate::bench_serve::measure(&bench)?;
    if !a.quiet {
        eprint!("{}", crate::bench_serve::table(&figures));
    }
    report.serve = Some((best.1.to_string(), figures));
    report.times.push(("serve", t.elapsed().as_secs_f64()));

    stage(a.quiet, "compress (8- and 4-bit weights)");
    let t = Instant::now();
    let weights = best.2.join("model.safetensors");
    let mut rows = vec![report::Compressed {
        kind: "f32",
        bytes: std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0),
        score: best.0,
        decode_tokens_per_sec: decode_speed(&best.2, &a.device)?,
    }];
    for kind in ["q8_0", "q4_0"] {
        let dir = out.join(format!("{}-{kind}", best.1.to_lowercase()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        crate::export::quantize_quiet(&best.2, &dir, kind)?;
        let o = crate::eval::eval_model(&dir, &items, &eval_args)?;
        rows.push(report::Compressed {
            kind,
            bytes: std::fs::metadata(dir.join(ferrochat_model::gguf::QUANTIZED_FILE))
                .map(|m| m.len())
                .unwrap_or(0),
            score: o.card.overall.mean_score,
            decode_tokens_per_sec: decode_speed(&dir, &a.device)?,
        });
    }
    report.compressed = Some((best.1.to_string(), rows));
    report.times.push(("compress", t.elapsed().as_secs_f64()));
    report.total_secs = t0.elapsed().as_secs_f64();
    let md = report.markdown(&a, &p);
    let summary = out.join("speedrun.md");
    ferrochat_text::write_atomic(&summary, md.as_bytes())
        .with_context(|| format!("writing {}", summary.display()))?;
    let path = crate::report::write(&out)?;
    println!("speedrun finished in {:.0}s", report.total_secs);
    // the binary as the user can type it from here
    let exe = std::env::current_exe()
        .ok()
        .map(|p| match std::env::current_dir() {
            Ok(cwd) => p.strip_prefix(&cwd).map(|r| r.to_path_buf()).unwrap_or(p),
            Err(_) => p,
        })
        // Linux marks a binary replaced while it runs as "(deleted)"; the path is still right
        .map(|p| {
            p.display()
                .to_string()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_else(|| "ferrochat".into());
    if let (Some(b), Some(c)) = (&report.eval_base, &report.eval_sft) {
        let mut line = format!(
            "judged score on {} held-out prompts: base {:.3}, SFT {:.3}",
            c.overall.n, b.overall.mean_score, c.overall.mean_score
        );
        for (name, card) in &report.aligned {
            line += &format!(", {name} {:.3}", card.overall.mean_score);
        }
        println!("{line}");
    }
    let (_, best_name, best_dir) = best;
    println!("best chat model ({best_name}): {}", best_dir.display());
    println!("chat with it:  {exe} chat --model {}", best_dir.display());
    println!(
        "or serve it:   {exe} serve --model {}   (chat page at http://127.0.0.1:8000/)",
        best_dir.display()
    );
    println!("report: {}", path.display());
    Ok(())
}

fn tokenizer_stats(tok: &Tokenizer) -> Result<(usize, f64, f64)> {
    let en = "The capital of France is Paris. Water boils at one hundred degrees.";
    let zh = "法国的首都是巴黎。水在一百度时沸腾。";
    Ok((
        tok.vocab_size(),
        tok.bytes_per_token(en)?,
        tok.bytes_per_token(zh)?,
    ))
}

const SAMPLE_PROMPTS: [&str; 4] = [
    "The capital of France is",
    "Water is made of",
    "法国的首都是",
    "三加四等于",
];

/// Greedy decoding speed of a checkpoint at batch 1 (median of 3 runs of 128 tokens).
fn decode_speed(dir: &Path, device: &str) -> Result<f64> {
    let (tok, model, _) = crate::runtime::open_model(dir, device)?;
    let mut ids = vec![tok.special().bos];
    ids.extend(tok.encode("The capital of France is")?);
    let opts = ferrochat_engine::GenerateOptions {
        max_new_tokens: 128,
        sampling: ferrochat_engine::SamplingParams::greedy(),
        seed: 0,
        stop: vec![],
        watermark: None,
    };
    let mut runs = Vec::new();
    for _ in 0..4 {
        let g = ferrochat_engine::generate(&model, &ids, &opts, |_| true)?;
        runs.push(g.decode_tokens_per_sec());
    }
    runs.remove(0); // warm-up
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

fn samples(base: &Path, device: &str) -> Result<Vec<(String, String)>> {
    let (tok, model, _) = crate::runtime::open_model(base, device)?;
    SAMPLE_PROMPTS
        .iter()
        .map(|p| Ok((p.to_string(), crate::pretrain::sample(&model, &tok, p, 0)?)))
        .collect()
}
