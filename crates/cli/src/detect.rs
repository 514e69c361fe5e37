//! `ferrochat detect`: does a text carry our watermark? Only the tokenizer and the key
//! are needed, no model. `ferrochat bench watermark`: how well detection works on the
//! world, against text people (the world) wrote, and after edits.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferrochat_engine::{generate_batch, GenerateOptions, SamplingParams, Watermark};
use ferrochat_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

#[derive(clap::Args)]
#[command(after_help = "\
Prints the share of green tokens, the z-score (standard deviations above what unmarked \
text gives) and its one-sided p-value. Light edits lower z but leave it high on long texts.")]
pub struct Args {
    /// The watermark's key (as given to --watermark-key)
    #[arg(long)]
    pub key: u64,
    /// A tokenizer or checkpoint folder (the model that wrote the text used it)
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Green share the text was written with
    #[arg(long, default_value_t = Watermark::DEFAULT_GAMMA)]
    pub gamma: f32,
    /// Call a text watermarked above this z (4 makes a false alarm about 3 in 100,000)
    #[arg(long, default_value_t = 4.0)]
    pub threshold: f64,
    /// Print one JSON object instead of a sentence
    #[arg(long)]
    pub json: bool,
    /// The text (a file; stdin when absent)
    pub file: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let tok = Tokenizer::load(&a.tokenizer)?;
    let text = match &a.file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {} as UTF-8 text", f.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read stdin as UTF-8 text")?;
            s
        }
    };
    let w = Watermark {
        key: a.key,
        gamma: a.gamma,
        delta: Watermark::DEFAULT_DELTA,
    };
    if let Err(e) = w.validate() {
        bail!("--gamma: {e}");
    }
    let ids = tok.encode_plain(&text)?;
    let d = w.detect(&ids);
    let marked = d.z > a.threshold;
    if a.json {
        println!(
            "{}",
            json!({"tokens": ids.len(), "scored": d.scored, "green": d.green,
                "green_share": d.green as f64 / d.scored.max(1) as f64, "z": d.z,
                "p_value": d.p_value, "watermarked": marked, "threshold": a.threshold})
        );
    } else {
        println!(
            "{}: {} of {} scored tokens green ({:.1}%, {:.0}% expected), z = {:.2}, p = {:.2e}",
            if marked {
                "watermarked"
            } else {
                "no watermark found"
            },
            d.green,
            d.scored,
            100.0 * d.green as f64 / d.scored.max(1) as f64,
            100.0 * a.gamma,
            d.z,
            d.p_value
        );
        if d.scored < 25 {
            println!(
                "(only {} tokens scored: too short a text to tell much)",
                d.scored
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The model that writes (a base model continues text; a chat model works too)
    #[arg(long)]
    pub model: PathBuf,
    /// Text people wrote, one document per line or paragraph (the world's pretrain.txt)
    #[arg(long)]
    pub human: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub key: u64,
    #[arg(long, default_value_t = Watermark::DEFAULT_GAMMA)]
    pub gamma: f32,
    #[arg(long, default_value_t = Watermark::DEFAULT_DELTA)]
    pub delta: f32,
    /// Texts of each kind
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Tokens in each text
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Prompt tokens taken from a human text for the model to continue
    #[arg(long, default_value_t = 16)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Token windows of `len` from the human text, one per paragraph that is long enough.
fn human_windows(tok: &Tokenizer, text: &str, n: usize, len: usize) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    let mut buf: Vec<u32> = Vec::new();
    for para in text.split("\n\n").flat_map(|p| p.split('\n')) {
        let p = para.trim();
        if p.is_empty() {
            continue;
        }
        buf.extend(tok.encode_plain(p)?);
        buf.extend(tok.encode_plain("\n")?);
        if buf.len() >= len {
            out.push(buf[..len].to_vec());
            buf.clear();
            if out.len() == n {
                break;
            }
        }
    }
    if out.len() < n {
        bail!(
            "the human text holds only {} windows of {len} tokens; {n} were asked for",
            out.len()
        );
    }
    Ok(out)
}

/// `share` of the tokens (after the first) swapped for random non-special ones.
fn edit(ids: &[u32], share: f64, vocab: u32, tok: &Tokenizer, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut out = ids.to_vec();
    let n = ((ids.len() as f64) * share).round() as usize;
    let mut spots: Vec<usize> = (1..ids.len()).collect();
    for i in 0..n.min(spots.len()) {
        let j = rng.random_range(i..spots.len());
        spots.swap(i, j);
        out[spots[i]] = loop {
            let t = rng.random_range(0..vocab);
            if !tok.special().is_special(t) {
                break t;
            }
        };
    }
    out
}

pub fn bench(a: BenchArgs) -> Result<()> {
    anyhow::ensure!(a.tokens >= 20, "--tokens must be at least 20");
    let (tok, model, _) = crate::runtime::open_model(&a.model, &a.device)?;
    let w = Watermark {
        key: a.key,
        gamma: a.gamma,
        delta: a.delta,
    };
    if let Err(e) = w.validate() {
        bail!("{e}");
    }
    let text = std::fs::read_to_string(&a.human)
        .with_context(|| format!("cannot read {}", a.human.display()))?;
    // 2n windows: n scored as human text, n whose start prompts the model
    let windows = human_windows(
        &tok,
        &text,
        2 * a.samples,
        a.tokens.max(a.prompt_tokens + 1),
    )?;
    let (human, prompts) = windows.split_at(a.samples);
    let human: Vec<Vec<u32>> = human.iter().map(|h| h[..a.tokens].to_vec()).collect();
    let prompts: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut ids = vec![tok.special().bos];
            ids.extend(&p[..a.prompt_tokens]);
            ids
        })
        .collect();
    let write = |mark: Option<Watermark>| -> Result<Vec<Vec<u32>>> {
        let opts = GenerateOptions {
            max_new_tokens: a.tokens,
            sampling: SamplingParams {
                temperature: a.temperature,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                repetition_penalty: 1.0,
            },
            seed: a.seed,
            stop: vec![],
            watermark: mark,
        };
        let gens = generate_batch(&model, &prompts, std::slice::from_ref(&opts), |_, _| true)?;
        // what a detector sees: the text, tokenized again
        gens.iter()
            .map(|g| {
                let text = tok.decode(&g.tokens, false)?;
                Ok(tok.encode_plain(&text)?)
            })
            .collect()
    };
    eprintln!(
        "bench watermark: {} texts of {} tokens each kind, gamma {}, delta {}, temperature {}",
        a.samples, a.tokens, a.gamma, a.delta, a.temperature
    );
    let plain = write(None)?;
    let marked = write(Some(w))?;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed ^ 0xED17);
    let vocab = tok.vocab_size() as u32;
    let edited = |share: f64, rng: &mut ChaCha8Rng| -> Vec<Vec<u32>> {
        marked
            .iter()
            .map(|m| edit(m, share, vocab, &tok, rng))
            .collect()
    };
    let ten = edited(0.10, &mut rng);
    let quarter = edited(0.25, &mut rng);
    let zs = |texts: &[Vec<u32>]| -> Vec<f64> { texts.iter().map(|t| w.detect(t).z).collect() };
    let human_z = zs(&human);
    // the threshold that flags 1% of the human texts (no lower than the normal tail's)
    let mut sorted = human_z.clone();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let empirical = sorted[((sorted.len() as f64) * 0.99).ceil() as usize - 1];
    let threshold = empirical.max(2.326);
    let rows = [
        ("human (the world's text)", human_z),
        ("model, no watermark", zs(&plain)),
        ("model, watermarked", zs(&marked)),
        ("  10% of tokens replaced", zs(&ten)),
        ("  25% of tokens replaced", zs(&quarter)),
    ];
    println!(
        "{:<28} {:>6} {:>8} {:>10}",
        "text", "n", "mean z", "flagged"
    );
    let mut out = Vec::new();
    for (name, z) in &rows {
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let flagged = z.iter().filter(|&&x| x > threshold).count() as f64 / z.len() as f64;
        println!(
            "{name:<28} {:>6} {mean:>8.2} {:>9.1}%",
            z.len(),
            100.0 * flagged
        );
        out.push(json!({"text": name.trim(), "n": z.len(), "mean_z": mean, "flagged": flagged}));
    }
    println!("flagged: z above {threshold:.2}, which flags at most 1% of the human texts");
    println!(
        "{}",
        json!({"gamma": a.gamma, "delta": a.delta, "tokens": a.tokens, "temperature": a.temperature,
            "threshold_z": threshold, "rows": out})
    );
    Ok(())
}
