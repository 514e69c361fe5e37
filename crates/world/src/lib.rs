//! The built-in world: a seeded, bilingual (English and Chinese) generator of all the data
//! a ferrochat run needs, and a judge that scores any answer against the world's truth.
//!
//! Real web corpora are too big to show on one laptop CPU that each stage does what it
//! claims, so `ferrochat speedrun` defaults to this world: real, checkable facts
//! (countries, chemical elements, planets, units), arithmetic, short poems and tiny code
//! fixes. From one seed it writes pretraining prose, SFT dialogues, comparisons and ranked
//! lists for reward modelling, and held-out prompts built to measure generalisation:
//! entities whose facts appear only in pretraining prose, wordings never trained on,
//! unseen arithmetic and unseen made-up names. The judge ([`judge`], [`judge_item`]) is
//! both the simulated labeller behind the comparisons and the referee of evaluation.

mod arith;
mod code;
mod dataset;
mod facts;
mod items;
mod items_more;
mod items_tone;
mod judge;
mod judge_poem;
mod names;
mod numbers;
mod phrases;
mod poem;
mod poem_bank;
mod prose;
mod recognise;
mod small_talk;
mod style;
mod tables;
mod talk;
mod tpl;
mod types;

#[cfg(test)]
mod sweep_tests;

pub use judge::{judge, judge_item};
pub use recognise::recognise;
pub use types::{CodeSpec, EvalItem, Expect, Lang, PoemSpec, Skill, SkillScore, Tone, Verdict};

use ferrochat_text::Message;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to generate. `Default` is sized for a CPU speedrun with a tiny model.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldConfig {
    pub seed: u64,
    /// Pretraining prose to write, in bytes (UTF-8).
    pub pretrain_bytes: usize,
    /// SFT dialogues; a further twentieth (at least 50) are written as `sft_val.jsonl`.
    pub sft_dialogues: usize,
    /// Pairwise comparisons; a quarter as many ranked lists go to `rankings.jsonl`, and a
    /// twentieth (at least 50), noise-free, to `comparisons_val.jsonl`.
    pub comparisons: usize,
    /// Share of comparisons whose preference is flipped (and of rankings with one
    /// adjacent pair swapped), like labellers who disagree.
    pub label_noise: f64,
    /// Held-out evaluation prompts per skill (fewer when a skill has fewer to give).
    pub heldout_per_skill: usize,
    /// Training prompts with the judge's expectations, for PPO and GRPO rollouts.
    pub rl_prompts: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            pretrain_bytes: 4_000_000,
            sft_dialogues: 16_000,
            comparisons: 3_000,
            label_noise: 0.0,
            heldout_per_skill: 40,
            rl_prompts: 1_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode a record for {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid world config: {0}")]
    Config(String),
}

/// Seconds spent on each output.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub pretrain: f64,
    pub sft: f64,
    pub comparisons: f64,
    pub heldout: f64,
    pub total: f64,
}

/// What [`generate`] wrote. `world.json` holds the same without timings, so that the
/// same seed gives byte-identical files.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub pretrain_bytes: usize,
    pub pretrain_documents: usize,
    pub sft_dialogues: usize,
    pub sft_val_dialogues: usize,
    pub comparisons: usize,
    pub comparisons_val: usize,
    pub rankings: usize,
    pub rl_prompts: usize,
    pub heldout: usize,
    pub label_noise: f64,
    pub heldout_by_skill: Vec<(Skill, usize)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<Timings>,
}

/// The pretraining prose, documents separated by blank lines.
pub fn pretrain_text(cfg: &WorldConfig) -> String {
    let mut out = String::with_capacity(cfg.pretrain_bytes + 4096);
    prose::write(
        &mut out,
        cfg.pretrain_bytes,
        cfg.seed,
        &mut dataset::stream(cfg.seed, 1),
    );
    out
}

/// The held-out evaluation prompts.
pub fn heldout(cfg: &WorldConfig) -> Vec<EvalItem> {
    dataset::heldout(cfg.seed, cfg.heldout_per_skill)
}

/// `k` worked examples of `skill` in `lang` from training items (each a conversation
/// ending in the gold answer), for few-shot prompting a base model the way GPT-3 was
/// evaluated: examples of the task at hand.
pub fn few_shot_examples(k: usize, skill: Skill, lang: Lang, seed: u64) -> Vec<Vec<Message>> {
    dataset::few_shot_examples(k, skill, lang, seed)
}

fn write(path: PathBuf, text: &str) -> Result<(), WorldError> {
    std::fs::write(&path, text).map_err(|source| WorldError::Io { path, source })
}

fn jsonl<T: Serialize>(path: PathBuf, records: &[T]) -> Result<(), WorldError> {
    let mut out = String::new();
    for r in records {
        match serde_json::to_string(r) {
            Ok(s) => out.push_str(&s),
            Err(source) => return Err(WorldError::Json { path, source }),
        }
        out.push('\n');
    }
    write(path, &out)
}

/// Write every file of the world into `out` (created if missing) and say what was written.
pub fn generate(cfg: &WorldConfig, out: &Path) -> Result<Summary, WorldError> {
    if !(0.0..=1.0).contains(&cfg.label_noise) {
        return Err(WorldError::Config(format!(
            "label_noise must be within 0..1, got {}",
            cfg.label_noise
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| WorldError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let start = Instant::now();

    let text = pretrain_text(cfg);
    write(out.join("pretrain.txt"), &text)?;
    let t_pretrain = start.elapsed().as_secs_f64();

    let n_val = (cfg.sft_dialogues / 20).max(50);
    let mut sft_items = dataset::training_items(cfg.seed, 2, cfg.sft_dialogues);
    dataset::vary_wording(&mut sft_items, cfg.seed);
    let sft: Vec<_> = sft_items.iter().map(dataset::labelled_dialogue).collect();
    let val: Vec<_> = dataset::training_items(cfg.seed, 3, n_val)
        .iter()
        .map(dataset::labelled_dialogue)
        .collect();
    jsonl(out.join("sft.jsonl"), &sft)?;
    jsonl(out.join("sft_val.jsonl"), &val)?;
    let t_sft = start.elapsed().as_secs_f64();

    let pairs = dataset::comparisons(cfg.seed, cfg.comparisons, cfg.label_noise);
    let ranked = dataset::rankings(cfg.seed, (cfg.comparisons / 4).max(1), cfg.label_noise);
    jsonl(out.join("comparisons.jsonl"), &pairs)?;
    jsonl(out.join("rankings.jsonl"), &ranked)?;
    let pairs_val = dataset::comparisons_val(cfg.seed, (cfg.comparisons / 20).max(50));
    jsonl(out.join("comparisons_val.jsonl"), &pairs_val)?;
    let t_cmp = start.elapsed().as_secs_f64();

    let rl = dataset::rl_prompts(cfg.seed, cfg.rl_prompts);
    jsonl(out.join("rl_prompts.jsonl"), &rl)?;
    let held = heldout(cfg);
    jsonl(out.join("heldout.jsonl"), &held)?;
    let t_held = start.elapsed().as_secs_f64();

    let mut summary = Summary {
        seed: cfg.seed,
        pretrain_bytes: text.len(),
        pretrain_documents: text.matches("\n\n").count(),
        sft_dialogues: sft.len(),
        sft_val_dialogues: val.len(),
        comparisons: pairs.len(),
        comparisons_val: pairs_val.len(),
        rankings: ranked.len(),
        rl_prompts: rl.len(),
        heldout: held.len(),
        label_noise: cfg.label_noise,
        heldout_by_skill: Skill::ALL
            .iter()
            .map(|s| (*s, held.iter().filter(|h| h.skill == *s).count()))
            .collect(),
        seconds: None,
    };
    let info = serde_json::to_string_pretty(&summary).map_err(|source| WorldError::Json {
        path: out.join("world.json"),
        source,
    })?;
    write(out.join("world.json"), &(info + "\n"))?;
    summary.seconds = Some(Timings {
        pretrain: t_pretrain,
        sft: t_sft - t_pretrain,
        comparisons: t_cmp - t_sft,
        heldout: t_held - t_cmp,
        total: start.elapsed().as_secs_f64(),
    });
    Ok(summary)
}

/// World entities (English names) mentioned in `text`, leftmost-longest, in order: for
/// reports, and for checking that held-out entities stay out of training data.
pub fn entities_in(text: &str) -> Vec<String> {
    let w = tables::world();
    names::find_entities(text, None)
        .into_iter()
        .map(|m| w.entities[m.2].name[0].clone())
        .collect()
}

/// The held-out entities of a seed, `[english, chinese]`: real ones whose facts appear
/// only in pretraining prose, and made-up ones that appear only in evaluation.
pub fn heldout_entities(seed: u64) -> Vec<[String; 2]> {
    let w = tables::world();
    let held = tables::heldout_entities(seed);
    let mut out: Vec<[String; 2]> = w
        .entities
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(e, _)| e.name.clone())
        .collect();
    for kind in [tables::Kind::Country, tables::Kind::Element] {
        out.extend(
            names::fake_names(kind)
                .into_iter()
                .filter(|n| names::fake_is_heldout(seed, &n[0])),
        );
    }
    out
}

/// Every held-out question template of the skills asked through templates (facts,
/// follow-ups, false premises, tone, poems, code, arithmetic), slots unfilled. Their
/// sentences never reach training data, but their words do: pretraining prose uses each
/// of them in statements, so a held-out wording is a new question made of known words.
pub fn heldout_templates() -> Vec<&'static str> {
    let mut t: Vec<&'static str> = Vec::new();
    t.extend(phrases::QUESTIONS.iter().filter(|q| q.2).map(|q| q.3));
    t.extend(phrases::FOLLOW_UPS.iter().filter(|q| q.2).map(|q| q.3));
    t.extend(phrases::WHAT_ABOUT.iter().filter(|q| q.1).map(|q| q.2));
    t.extend(phrases::PREMISES.iter().filter(|q| q.2).map(|q| q.3));
    t.extend(items_tone::TONE_PROMPTS.iter().filter(|q| q.2).map(|q| q.3));
    t.extend(poem::PROMPTS.iter().filter(|q| q.1).map(|q| q.2));
    t.extend(code::PROMPTS.iter().filter(|q| q.1).map(|q| q.2));
    t.extend(arith::PROMPTS.iter().filter(|q| q.2).map(|q| q.3));
    t
}

/// The fixed wording of every held-out template and held-out request (its longest
/// literal piece), which must never appear in any training split.
pub fn heldout_wordings() -> Vec<&'static str> {
    let mut t = heldout_templates();
    t.extend(talk::HELD_ASKS.iter().flat_map(|a| a.iter()).copied());
    t.extend(
        talk::SMALL_TALK
            .iter()
            .filter(|c| c.heldout)
            .flat_map(|c| [c.en.0, c.zh.0]),
    );
    t.extend(
        talk::BENIGN
            .iter()
            .filter(|c| c.heldout)
            .flat_map(|c| [c.en.0, c.zh.0]),
    );
    t.extend(
        talk::HARMFUL
            .iter()
            .filter(|c| c.2)
            .flat_map(|c| [c.0, c.1]),
    );
    t.iter()
        .filter_map(|tpl| {
            tpl::literals(tpl)
                .into_iter()
                .max_by_key(|p| p.chars().count())
        })
        .map(str::trim)
        .collect()
}
