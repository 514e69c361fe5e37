//! `ferrochat speedrun`: the whole pipeline on the built-in world, stage by stage into
//! one run folder, ending in a model and `report.md`. A stage whose output is already
//! complete is kept, so an interrupted speedrun continues where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ferrochat_tokenizer::Tokenizer;
use ferrochat_world::WorldConfig;

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

/// Sizes of one speedrun.
struct Plan {
    world: WorldConfig,
    vocab: usize,
    pretrain: crate::pretrain::Args,
    sft: crate::sft::Args,
    eval_items: usize,
}

fn plan(a: &Args) -> Plan {
    let out = &a.output;
    let mut world = WorldConfig {
        seed: a.seed,
        ..Default::default()
    };
    let mut pretrain = crate::pretrain::Args {
        data: out.join("data"),
        tokenizer: None,
        output: out.join("base"),
        preset: "d4".into(),
        steps: 600,
        batch: 8,
        seq: 256,
        grad_accum: 1,
        lr: 3e-3,
        min_lr_frac: 0.05,
        warmup: 60,
        schedule: ferrochat_train::ScheduleKind::Cosine,
        weight_decay: 0.1,
        grad_clip: 1.0,
        eval_every: 100,
        eval_batches: 16,
        sample_every: 200,
        sample_prompt: "The capital of France is".into(),
        checkpoint_every: 100,
        seed: a.seed,
        untied: false,
        resume: true,
        quiet: a.quiet,
        device: a.device.clone(),
    };
    let world_dir = out.join("world");
    let mut sft = crate::sft::Args {
        base: out.join("base"),
        data: world_dir.join("sft.jsonl"),
        val: Some(world_dir.join("sft_val.jsonl")),
        output: out.join("chat"),
        steps: 0,
        epochs: 2.0,
        batch: 8,
        seq: 0,
        grad_accum: 1,
        lr: 1e-3,
        min_lr_frac: 0.0,
        warmup: 10,
        schedule: ferrochat_train::ScheduleKind::Cosine,
        weight_decay: 0.0,
        grad_clip: 1.0,
        eval_every: 100,
        eval_batches: 16,
        sample_every: 0,
        sample_prompt: "What is the capital of France?".into(),
        checkpoint_every: 100,
        seed: a.seed,
        no_pack: false,
        mix_pretrain: 0.0,
        pretrain_data: None,
        on_bad: crate::records::BadRecords::Fail,
        resume: true,
        quiet: a.quiet,
        device: a.device.clone(),
    };
    let mut vocab = 4096;
    let mut eval_items = 150;
    if a.quick {
        world.pretrain_bytes = 400_000;
        world.sft_dialogues = 200;
        world.comparisons = 200;
        vocab = 1024;
        pretrain.preset = "tiny".into();
        pretrain.steps = 120;
        pretrain.batch = 8;
        pretrain.seq = 128;
        pretrain.warmup = 10;
        pretrain.eval_every = 60;
        pretrain.eval_batches = 4;
        pretrain.sample_every = 0;
        pretrain.checkpoint_every = 60;
        sft.eval_every = 0;
        sft.eval_batches = 4;
        sft.checkpoint_every = 0;
        eval_items = 24;
    }
    Plan {
        world,
        vocab,
        pretrain,
        sft,
        eval_items,
    }
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
    if !world_dir.join("world.json").exists() {
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

    stage(a.quiet, "eval (chat model)");
    let t = Instant::now();
    let chat = p.sft.output.clone();
    eval_args.few_shot = Some(0);
    let outcome = crate::eval::eval_model(&chat, &items, &eval_args)?;
    crate::eval::write_results(&out.join("eval_sft.json"), &chat, &outcome)?;
    report.eval_sft = Some(outcome.card);
    report.times.push(("eval sft", t.elapsed().as_secs_f64()));
    report.total_secs = t0.elapsed().as_secs_f64();
    let md = report.markdown(&a, &p);
    let path = out.join("report.md");
    ferrochat_text::write_atomic(&path, md.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
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
        println!(
            "judged score on {} held-out prompts: base {:.3} -> chat {:.3}",
            c.overall.n, b.overall.mean_score, c.overall.mean_score
        );
    }
    println!("chat model: {}", chat.display());
    println!("chat with it:  {exe} chat --model {}", chat.display());
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

fn samples(base: &Path, device: &str) -> Result<Vec<(String, String)>> {
    let (tok, model, _) = crate::runtime::open_model(base, device)?;
    SAMPLE_PROMPTS
        .iter()
        .map(|p| Ok((p.to_string(), crate::pretrain::sample(&model, &tok, p, 0)?)))
        .collect()
}

#[derive(Default)]
struct Report {
    world: Option<String>,
    tokenizer: Option<(usize, f64, f64)>,
    pretrain: Option<ferrochat_train::PretrainSummary>,
    samples: Vec<(String, String)>,
    eval_base: Option<ferrochat_eval::Scorecard>,
    sft: Option<ferrochat_train::SftSummary>,
    eval_sft: Option<ferrochat_eval::Scorecard>,
    times: Vec<(&'static str, f64)>,
    total_secs: f64,
}

impl Report {
    fn markdown(&self, a: &Args, p: &Plan) -> String {
        let mut s = String::from("# ferrochat speedrun report\n\n");
        s += &format!(
            "Run folder `{}`, seed {}, {} size, {} threads, total {:.0} s.\n\n",
            a.output.display(),
            a.seed,
            if a.quick { "quick" } else { "default" },
            std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
            self.total_secs
        );
        s += "## Stages\n\n| stage | seconds |\n|---|---|\n";
        for (name, secs) in &self.times {
            s += &format!("| {name} | {secs:.1} |\n");
        }
        if let Some(w) = &self.world {
            s += &format!("\n## World\n\n```json\n{}\n```\n", w.trim());
        }
        if let Some((v, en, zh)) = self.tokenizer {
            s += &format!(
                "\n## Tokenizer\n\nByte-level BPE, {v} tokens. Compression: English {en:.2} bytes/token, Chinese {zh:.2} bytes/token.\n"
            );
        }
        if let Some(r) = &self.pretrain {
            s += &format!(
                "\n## Pretraining\n\nPreset `{}` ({:.2}M parameters), {} steps of {} x {} tokens, {} tokens in {:.0} s ({:.0} tokens/s).\n\n\
                 | metric | value |\n|---|---|\n| train loss | {:.3} |\n| val loss | {:.3} |\n| unigram baseline | {:.3} |\n| val bits/byte | {:.3} |\n",
                p.pretrain.preset, r.params as f64 / 1e6, r.steps, p.pretrain.batch, p.pretrain.seq, r.tokens,
                r.elapsed_secs, r.tokens_per_sec, r.train_loss, r.val_loss, r.unigram_loss, r.val_bpb
            );
        }
        if !self.samples.is_empty() {
            s += "\n## Samples of the base model\n\n| prompt | continuation |\n|---|---|\n";
            for (prompt, text) in &self.samples {
                let t = text.replace('|', "\\|").replace('\n', " ");
                s += &format!("| {prompt} | {t} |\n");
            }
        }
        if let Some(r) = &self.sft {
            s += &format!(
                "\n## Supervised fine-tuning\n\n{} dialogues ({} cut to fit the context, {} too long) packed into {} rows of {} tokens \
                 ({:.0}% filled, {:.0}% of positions are answer tokens); {} steps, {} tokens in {:.0} s ({:.0} tokens/s).\n\n\
                 | metric | value |\n|---|---|\n| train loss | {:.3} |\n| answer loss on validation dialogues, before | {:.3} |\n| after | {:.3} |\n",
                r.pack.conversations, r.pack.truncated, r.pack.too_long, r.pack.rows, p.pretrain.seq,
                100.0 * r.pack.fill, 100.0 * r.pack.target_share, r.steps, r.tokens, r.elapsed_secs,
                r.tokens_per_sec, r.train_loss, r.val_loss_before, r.val_loss
            );
        }
        s += "\n## Judged evaluation on held-out prompts\n\nGreedy answers to the world's held-out prompts, scored by its judge (mean score; share of answers passing every skill).\n";
        if let Some(card) = &self.eval_base {
            s += "\n### Base model, prompted with 3 worked examples (GPT-3 style)\n\n";
            s += &card.markdown();
        }
        if let Some(card) = &self.eval_sft {
            s += "\n### Chat model after SFT, asked directly in the chat format\n\n";
            s += &card.markdown();
        }
        if let (Some(b), Some(c)) = (&self.eval_base, &self.eval_sft) {
            s += "\n### Base vs chat, mean judge score per skill\n\n";
            s += &ferrochat_eval::Scorecard::compare_markdown(&[("base (3-shot)", b), ("SFT", c)]);
        }
        s
    }
}
