//! What the command-line tests share: the binary, running it, and a small prepared world.
//! Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrochat"))
}

/// `ferrochat logits` of a checkpoint for a fixed prompt, as JSON text: two folders give
/// the same text exactly when their models compute the same thing.
pub fn logits(dir: &Path) -> String {
    let o = run_ok(
        bin()
            .args(["logits", "--prompt", "Paris is", "--model"])
            .arg(dir),
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs a command that must succeed; on failure the panic shows its stdout and stderr.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("ferrochat runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small world: 0.3 MB of prose, 60 dialogues and comparisons, 512 tokens.
pub const SMALL: Small = Small {
    pretrain_mb: "0.3",
    records: "60",
    vocab: "512",
    val_fraction: "0.05",
};

/// Sizes of a prepared world.
pub struct Small {
    pub pretrain_mb: &'static str,
    /// Dialogues and comparisons each.
    pub records: &'static str,
    pub vocab: &'static str,
    pub val_fraction: &'static str,
}

/// A world (seed 3) in `dir/world`, a tokenizer trained on its prose in `dir/tok`, and
/// token shards of the prose in `dir/data`, whose path is returned.
pub fn prepared(dir: &Path, s: &Small) -> PathBuf {
    let world = dir.join("world");
    run_ok(
        bin()
            .args(["world", "generate", "--seed", "3", "--quiet"])
            .args(["--pretrain-mb", s.pretrain_mb])
            .args(["--sft", s.records, "--comparisons", s.records, "--output"])
            .arg(&world),
    );
    let tok = dir.join("tok");
    run_ok(
        bin()
            .args(["tokenizer", "train", "--vocab-size", s.vocab, "--quiet"])
            .arg("--output")
            .arg(&tok)
            .arg(world.join("pretrain.txt")),
    );
    let data = dir.join("data");
    run_ok(
        bin()
            .args(["data", "prepare", "--quiet", "--split-above", "4096"])
            .args(["--val-fraction", s.val_fraction])
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--output")
            .arg(&data)
            .arg(world.join("pretrain.txt")),
    );
    data
}

/// A random tiny chat checkpoint with a real tokenizer.
pub fn checkpoint_dir(dir: &Path) {
    let text: Vec<String> = (0..100)
        .map(|i| format!("Question {i}: what is {i} plus one? Answer: {}.", i + 1))
        .collect();
    let tok = ferrochat_tokenizer::Tokenizer::train(
        text.into_iter(),
        &ferrochat_tokenizer::TrainOptions {
            vocab_size: 300,
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = ferrochat_model::Config {
        tie_word_embeddings: false,
        ..ferrochat_model::Config::preset("tiny", tok.vocab_size(), 64).unwrap()
    };
    let w = ferrochat_model::weights::init_weights(&cfg, 1, &candle_core::Device::Cpu).unwrap();
    let meta = ferrochat_model::checkpoint::Meta {
        stage: "sft".into(),
        ..Default::default()
    };
    ferrochat_model::checkpoint::save(dir, &cfg, &w, &meta, |d| {
        tok.save(d)
            .map_err(|e| ferrochat_model::ModelError::Config(e.to_string()))
    })
    .unwrap();
}
