//! The command line end to end on a tiny model: world -> tokenizer -> shards ->
//! pretraining, exact resume after a kill, and clear errors on bad input.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{bin, logits};

fn ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&common::run_ok(cmd).stdout).into_owned()
}

/// Runs a command that must fail cleanly: exit code 1, a message, no panic.
fn fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("ferrochat runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} should fail cleanly: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// Greedy text from a checkpoint, continuing "The capital of".
fn greedy_from(model: &Path) -> String {
    let o = bin()
        .args([
            "generate",
            "--prompt",
            "The capital of",
            "--max-tokens",
            "8",
        ])
        .args(["--temperature", "0", "--model"])
        .arg(model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// A small world, a tokenizer and shards.
fn prepared(dir: &Path) -> PathBuf {
    common::prepared(dir, &common::SMALL)
}

fn pretrain(data: &Path, out: &Path, steps: u32) -> Command {
    let mut c = bin();
    c.args([
        "pretrain", "--preset", "tiny", "--seq", "64", "--batch", "8", "--quiet",
    ])
    .args([
        "--lr",
        "4e-3",
        "--warmup",
        "10",
        "--eval-every",
        "0",
        "--eval-batches",
        "4",
    ])
    .args(["--checkpoint-every", "10", "--steps", &steps.to_string()])
    .arg("--data")
    .arg(data)
    .arg("--output")
    .arg(out);
    c
}

/// Runs a training command and kills it (SIGKILL) once it has written its first checkpoint.
fn kill_after_first_checkpoint(cmd: &mut Command) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().contains("\"kind\":\"checkpoint\"") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn meta_metric(dir: &Path, key: &str) -> f64 {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    meta["metrics"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {meta}"))
}

#[test]
fn pretraining_learns_resumes_exactly_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());

    // 1. a tiny model learns: validation loss far below the unigram baseline
    let base = tmp.path().join("base");
    ok(&mut pretrain(&data, &base, 150));
    let (val, unigram) = (
        meta_metric(&base, "val_loss"),
        meta_metric(&base, "unigram_loss"),
    );
    assert!(
        val < unigram - 1.0,
        "val loss {val} is not well below the unigram baseline {unigram}"
    );
    let text = ok(bin()
        .args([
            "generate",
            "--max-tokens",
            "12",
            "--prompt",
            "The capital of",
        ])
        .arg("--model")
        .arg(&base));
    assert!(
        text.starts_with("The capital of") && text.len() > 20,
        "{text}"
    );

    // 2. killed after its first checkpoint, then resumed: the same model as an unbroken run
    let unbroken = tmp.path().join("unbroken");
    ok(&mut pretrain(&data, &unbroken, 60));
    let killed = tmp.path().join("killed");
    kill_after_first_checkpoint(&mut pretrain(&data, &killed, 60));
    let at = ok(pretrain(&data, &killed, 60).arg("--resume"));
    assert!(
        at.contains("\"step\":60"),
        "the resumed run should reach step 60"
    );
    for key in ["train_loss", "val_loss"] {
        assert_eq!(
            meta_metric(&killed, key),
            meta_metric(&unbroken, key),
            "{key} after resume"
        );
    }
    assert_eq!(
        logits(&killed),
        logits(&unbroken),
        "resumed weights differ from the unbroken run"
    );
    // a resume with other options is refused
    let err = fails(pretrain(&data, &killed, 60).args(["--resume", "--seed", "7"]));
    assert!(err.contains("cannot resume"), "{err}");

    // 3. bad inputs: a clear error naming what is wrong
    let shard = data.join("train_0000.bin");
    let bytes = std::fs::read(&shard).unwrap();
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in [
        "manifest.json",
        "val_0000.bin",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(data.join(f), broken.join(f)).unwrap();
    }
    std::fs::write(broken.join("train_0000.bin"), &bytes[..bytes.len() - 7]).unwrap();
    let err = fails(&mut pretrain(&broken, &tmp.path().join("x"), 5));
    assert!(err.contains("train_0000.bin"), "{err}");

    let latin1 = tmp.path().join("latin1.txt");
    std::fs::write(&latin1, b"first line\ncaf\xe9 au lait\n").unwrap();
    let err = fails(
        bin()
            .args(["data", "prepare", "--tokenizer"])
            .arg(tmp.path().join("tok"))
            .arg("--output")
            .arg(tmp.path().join("d2"))
            .arg(&latin1),
    );
    assert!(err.contains("latin1.txt") && err.contains('2'), "{err}");

    let err = fails(
        bin()
            .args(["generate", "--prompt", "hi", "--model"])
            .arg(tmp.path().join("nothing")),
    );
    assert!(err.contains("nothing"), "{err}");

    let err = fails(
        bin()
            .args(["pretrain", "--data"])
            .arg(&data)
            .arg("--tokenizer")
            .arg(tmp.path().join("no-tok"))
            .arg("--output")
            .arg(tmp.path().join("y")),
    );
    assert!(err.contains("no-tok") && err.contains("not found"), "{err}");

    // a checkpoint whose config does not match its weights
    let cfg_path = base.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"intermediate_size\": 192", "\"intermediate_size\": 200");
    std::fs::write(&cfg_path, cfg).unwrap();
    let err = fails(
        bin()
            .args(["generate", "--prompt", "hi", "--model"])
            .arg(&base),
    );
    assert!(
        err.contains("mlp.gate_proj.weight") && err.contains("[192, 64]"),
        "{err}"
    );
}

/// The dtypes of a safetensors file's tensors, from its header.
fn safetensors_dtypes(path: &Path) -> std::collections::BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn mixed_precision_pretraining_learns_as_f32_does_and_keeps_f32_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let (f32_run, bf16_run) = (tmp.path().join("f32"), tmp.path().join("bf16"));
    ok(pretrain(&data, &f32_run, 80).args(["--precision", "f32"]));
    ok(pretrain(&data, &bf16_run, 80).args(["--precision", "bf16"]));
    let (exact, mixed) = (
        meta_metric(&f32_run, "val_loss"),
        meta_metric(&bf16_run, "val_loss"),
    );
    let unigram = meta_metric(&bf16_run, "unigram_loss");
    assert!(mixed < unigram - 0.5, "bf16 {mixed}, unigram {unigram}");
    // bf16 products change the run (it really multiplied in bf16) but not what it learns
    assert!(
        mixed != exact && (mixed - exact).abs() < 0.05,
        "bf16 val loss {mixed} against f32 {exact}"
    );
    // the weights and the optimizer's moments are f32 (the optimizer also keeps an I64 count)
    for f in ["model.safetensors", "trainer.safetensors"] {
        let dtypes = safetensors_dtypes(&bf16_run.join(f));
        let floats: Vec<&String> = dtypes
            .iter()
            .filter(|d| d.starts_with(['F', 'B']))
            .collect();
        assert_eq!(floats, ["F32"], "{f}");
    }
    let out = pretrain(&data, &tmp.path().join("x"), 5)
        .args(["--precision", "f8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(
        err.contains("'f8'") && err.contains("auto, f32, bf16"),
        "{err}"
    );
}

#[test]
fn a_mixture_of_experts_trains_resumes_and_fine_tunes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let moe = |out: &Path, steps: u32| {
        let mut c = pretrain(&data, out, steps);
        c.args(["--experts", "4", "--experts-per-token", "2"]);
        c
    };
    let full = tmp.path().join("moe");
    ok(&mut moe(&full, 40));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "mixtral");
    assert_eq!(cfg["architectures"][0], "MixtralForCausalLM");
    assert_eq!(
        (
            cfg["num_local_experts"].as_u64(),
            cfg["num_experts_per_tok"].as_u64()
        ),
        (Some(4), Some(2))
    );
    // it learns, and logs how evenly it routes
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(full.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "step")
        .collect();
    let loss = |i: usize| steps[i]["loss"].as_f64().unwrap();
    assert!(loss(39) < loss(0) - 1.0, "{} -> {}", loss(0), loss(39));
    let balance = steps[39]["router_balance"].as_f64().unwrap();
    assert!((1.0..2.0).contains(&balance), "router balance {balance}");
    assert!(greedy_from(&full).starts_with("The capital of"));
    // killed after its first checkpoint and resumed: the same model as the unbroken run
    let resumed = tmp.path().join("moe_resumed");
    kill_after_first_checkpoint(&mut moe(&resumed, 40));
    ok(moe(&resumed, 40).arg("--resume"));
    assert!(
        logits(&resumed) == logits(&full),
        "resumed weights differ from the unbroken run"
    );
    // the next stages take it
    let chat = tmp.path().join("moe_chat");
    ok(bin()
        .args(["sft", "--quiet", "--steps", "3", "--base"])
        .arg(&full)
        .arg("--data")
        .arg(tmp.path().join("world/sft.jsonl"))
        .arg("--output")
        .arg(&chat));
    // quantized to 8 bits (experts quantized, router f32), it still answers
    let q8 = tmp.path().join("moe_q8");
    ok(bin()
        .args(["quantize", "--type", "q8_0", "--model"])
        .arg(&full)
        .arg("--output")
        .arg(&q8));
    let out = ok(bin()
        .args([
            "generate",
            "--prompt",
            "The",
            "--max-tokens",
            "4",
            "--model",
        ])
        .arg(&q8));
    assert!(out.starts_with("The"), "{out}");
    // a top-1 Switch router has no Mixtral form: exports say why
    let top1 = tmp.path().join("moe_top1");
    ok(pretrain(&data, &top1, 2).args(["--experts", "4", "--experts-per-token", "1"]));
    for (cmd, out) in [("gguf", "top1.gguf"), ("hf", "top1_hf")] {
        let err = fails(
            bin()
                .args(["export", cmd, "--model"])
                .arg(&top1)
                .arg("--output")
                .arg(tmp.path().join(out)),
        );
        assert!(err.contains("top-1 router"), "{err}");
    }
    // what does not handle experts yet says so
    let err = fails(
        bin()
            .args(["prune", "--method", "magnitude", "--model"])
            .arg(&full)
            .arg("--output")
            .arg(tmp.path().join("moe_pruned")),
    );
    assert!(err.contains("mixture of experts"), "{err}");
}

#[test]
fn quick_speedrun_runs_every_stage_and_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = ok(bin()
        .args(["speedrun", "--quick", "--quiet", "--output"])
        .arg(&run));
    assert!(out.contains("report:"), "{out}");
    for f in [
        "world/world.json",
        "tokenizer/tokenizer.json",
        "data/manifest.json",
        "base/model.safetensors",
        "eval_base.json",
        "chat/model.safetensors",
        "eval_sft.json",
        "reward/model.safetensors",
        "reward/reward.json",
        "ppo/model.safetensors",
        "ppo/heads.safetensors",
        "ppo/ppo.json",
        "dpo/dpo.json",
        "grpo/grpo.json",
        "eval_ppo.json",
        "eval_dpo.json",
        "eval_grpo.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    for section in [
        "## Tokenizer",
        "## Pretraining",
        "unigram baseline",
        "## Samples",
        "## Supervised fine-tuning",
        "## Judged evaluation",
        "## Reward model",
        "## PPO",
        "## DPO",
        "## GRPO",
        "### Every stage",
        "| PPO |",
        "win rate",
        "## Serving",
        "continuous (batch 4)",
        "## Compression",
        "| q8_0 |",
        "| q4_0 |",
        "## Report card",
        "### Environment",
        "### Stages",
        "### Plots",
        "### Compute",
        "![",
    ] {
        assert!(
            report.contains(section),
            "report lacks {section}:\n{report}"
        );
    }
    // every plot the report links is a real picture
    let linked: Vec<&str> = report
        .split("](plots/")
        .skip(1)
        .map(|r| r.split(')').next().unwrap())
        .collect();
    for want in [
        "loss_base.png",
        "lr.png",
        "reward.png",
        "kl.png",
        "accuracy_reward.png",
        "judged.png",
        "compute.png",
    ] {
        assert!(
            linked.contains(&want),
            "{want} not in the report: {linked:?}"
        );
    }
    for png in &linked {
        let file = std::fs::File::open(run.join("plots").join(png)).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert!(
            info.width >= 500 && info.height >= 300,
            "{png}: {}x{}",
            info.width,
            info.height
        );
        let pixels = &buf[..info.buffer_size()];
        let colours: std::collections::HashSet<&[u8]> = pixels.chunks(3).collect();
        let inked = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
        assert!(
            colours.len() > 8 && inked > 2000,
            "{png} looks empty: {} colours, {inked} inked pixels",
            colours.len()
        );
    }
    let rebuilt = ok(bin().args(["report", "--run"]).arg(&run));
    assert!(rebuilt.contains("report.md"), "{rebuilt}");
    assert_eq!(
        std::fs::read_to_string(run.join("report.md"))
            .unwrap()
            .lines()
            .count(),
        report.lines().count()
    );

    // a second run keeps the finished stages and ends the same
    let again = ok(bin()
        .args(["speedrun", "--quick", "--quiet", "--output"])
        .arg(&run));
    assert!(again.contains("report:"), "{again}");
    assert!(again.contains("chat --model"), "{again}");
    let meta = std::fs::read_to_string(run.join("base/meta.json")).unwrap();
    assert!(meta.contains("\"step\": 120"), "{meta}");
    let meta = std::fs::read_to_string(run.join("chat/meta.json")).unwrap();
    assert!(meta.contains("\"stage\": \"sft\""), "{meta}");
    let rm = std::fs::read_to_string(run.join("reward/config.json")).unwrap();
    assert!(rm.contains("LlamaForSequenceClassification"), "{rm}");

    // the reward model reads answers; a language model is refused as one
    let scores = ok(bin()
        .args(["reward", "score", "--model"])
        .arg(run.join("reward"))
        .args(["--prompt", "What is the capital of France?"])
        .args(["--answer", "Paris.", "--answer", "Ugh. Look it up."]));
    let lines: Vec<f64> = scores
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{scores}");
    let err = fails(
        bin()
            .args(["reward", "score", "--model"])
            .arg(run.join("chat"))
            .args(["--prompt", "hi", "--answer", "hello"]),
    );
    assert!(err.contains("not a reward model"), "{err}");
    // a stage never resumes another stage's folder
    let err = fails(
        bin()
            .args([
                "ppo",
                "--quiet",
                "--resume",
                "--iterations",
                "1",
                "--policy",
            ])
            .arg(run.join("chat"))
            .arg("--reward")
            .arg(run.join("reward"))
            .arg("--prompts")
            .arg(run.join("world/rl_prompts.jsonl"))
            .arg("--output")
            .arg(run.join("dpo")),
    );
    assert!(err.contains("holds a dpo checkpoint"), "{err}");
    // bad preference records are named by line, and stop the run when asked
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"b\"}\nnot json\n{\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"a\"}\n",
    )
    .unwrap();
    let err = fails(
        bin()
            .args([
                "dpo", "--quiet", "--steps", "1", "--on-bad", "fail", "--base",
            ])
            .arg(run.join("chat"))
            .arg("--data")
            .arg(&bad)
            .arg("--output")
            .arg(tmp.path().join("dpo_bad")),
    );
    assert!(err.contains("bad.jsonl:2: not JSON"), "{err}");

    // export hf: a clean folder with a generation config; never over another folder
    let exported = tmp.path().join("hf");
    ok(bin()
        .args(["export", "hf", "--model"])
        .arg(run.join("chat"))
        .arg("--output")
        .arg(&exported));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(exported.join(f).exists(), "{f} missing from the export");
    }
    assert!(!exported.join("trainer.json").exists());
    let err = fails(
        bin()
            .args(["export", "hf", "--model"])
            .arg(run.join("chat"))
            .arg("--output")
            .arg(&exported),
    );
    assert!(err.contains("not empty"), "{err}");

    // export gguf: read back with candle's GGUF reader, every tensor where llama.cpp
    // looks for it; f32 holds the weights exactly (query rows reordered per head for
    // llama.cpp's rotary pairs), q8_0 within its rounding
    let (cfg, w) =
        ferrochat_model::checkpoint::load(&run.join("chat"), &candle_core::Device::Cpu).unwrap();
    for ty in ["f32", "q8_0"] {
        let file = tmp.path().join(format!("chat-{ty}.gguf"));
        ok(bin()
            .args(["export", "gguf", "--type", ty, "--model"])
            .arg(run.join("chat"))
            .arg("--output")
            .arg(&file));
        let mut f = std::fs::File::open(&file).unwrap();
        let g = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        let meta = |k: &str| g.metadata.get(k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(meta("general.architecture").to_string().unwrap(), "llama");
        assert_eq!(
            meta("llama.block_count").to_u32().unwrap() as usize,
            cfg.num_hidden_layers
        );
        assert_eq!(
            meta("tokenizer.ggml.tokens").to_vec().unwrap().len(),
            cfg.vocab_size
        );
        assert!(meta("tokenizer.chat_template").to_string().is_ok());
        assert_eq!(g.tensor_infos.len(), w.len());
        let mut read = |name: &str| {
            g.tensor(&mut f, name, &candle_core::Device::Cpu)
                .unwrap()
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
        };
        let diff = |a: &candle_core::Tensor, b: &candle_core::Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let emb = read("token_embd.weight");
        let tol = if ty == "f32" { 0.0 } else { 0.02 };
        assert!(diff(&emb, &w["model.embed_tokens.weight"]) <= tol, "{ty}");
        // head 0's row 1 is the checkpoint's row d/2
        let q = read("blk.0.attn_q.weight");
        let hq = &w["model.layers.0.self_attn.q_proj.weight"];
        let half = cfg.head_size() / 2;
        assert!(
            diff(&q.get(1).unwrap(), &hq.get(half).unwrap()) <= tol,
            "{ty}"
        );
        assert!(diff(&q.get(2).unwrap(), &hq.get(1).unwrap()) <= tol, "{ty}");
    }
    let err = fails(
        bin()
            .args(["export", "gguf", "--model"])
            .arg(run.join("reward"))
            .arg("--output")
            .arg(tmp.path().join("rm.gguf")),
    );
    assert!(err.contains("reward model"), "{err}");

    // quantize: an 8-bit folder generates and chats like the checkpoint (greedy, a few
    // tokens); training from it is refused with the reason
    let q8 = tmp.path().join("chat-q8");
    ok(bin()
        .args(["quantize", "--type", "q8_0", "--model"])
        .arg(run.join("chat"))
        .arg("--output")
        .arg(&q8));
    assert!(q8.join("model.gguf").exists() && !q8.join("model.safetensors").exists());
    let answer = |m: &Path| {
        ok(bin()
            .args(["chat", "--prompt", "What is the capital of France?"])
            .args(["--temperature", "0", "--max-tokens", "12", "--model"])
            .arg(m))
    };
    let (a, b) = (answer(&run.join("chat")), answer(&q8));
    eprintln!("f32: {a:?}\nq8_0: {b:?}");
    // a tiny chat model may end its turn at once; the 8-bit one must agree with it on that
    assert_eq!(
        a.trim().is_empty(),
        b.trim().is_empty(),
        "f32: {a:?}\nq8_0: {b:?}"
    );
    let prompt = "The capital of France is";
    let text = ok(bin()
        .args([
            "generate",
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-tokens",
            "8",
        ])
        .arg("--model")
        .arg(&q8));
    assert!(
        text.trim().len() > prompt.len() && text.starts_with(prompt),
        "{text:?}"
    );
    let err = fails(
        bin()
            .args(["sft", "--quiet", "--steps", "1", "--base"])
            .arg(&q8)
            .arg("--data")
            .arg(run.join("world/sft.jsonl"))
            .arg("--output")
            .arg(tmp.path().join("sft_from_q8")),
    );
    assert!(err.contains("quantized model"), "{err}");

    // distillation: a smaller student learns the base model's distributions; its loss
    // against the teacher falls, and the teacher's own validation loss is reported
    let student = tmp.path().join("student");
    ok(bin()
        .args([
            "distill",
            "--quiet",
            "--student-preset",
            "tiny",
            "--steps",
            "12",
        ])
        .args([
            "--seq",
            "64",
            "--warmup",
            "2",
            "--eval-every",
            "6",
            "--temperature",
            "2",
        ])
        .args(["--kl", "mix", "--hard-weight", "0.2", "--teacher"])
        .arg(run.join("base"))
        .arg("--data")
        .arg(run.join("data"))
        .arg("--output")
        .arg(&student));
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(student.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kl: Vec<f64> = steps
        .iter()
        .filter(|v| v["kind"] == "step")
        .map(|v| v["kl"].as_f64().unwrap())
        .collect();
    assert_eq!(kl.len(), 12);
    assert!(
        kl[11] < kl[0],
        "the student drew nearer the teacher: {kl:?}"
    );
    let eval = steps.iter().rfind(|v| v["kind"] == "eval").unwrap();
    assert!(eval["teacher_val_loss"].as_f64().unwrap() < eval["val_loss"].as_f64().unwrap());
    assert!(greedy_from(&student).starts_with("The capital of"));
    let err = fails(
        bin()
            .args(["distill", "--quiet", "--steps", "1", "--teacher"])
            .arg(run.join("reward"))
            .arg("--data")
            .arg(run.join("data"))
            .arg("--output")
            .arg(tmp.path().join("student_of_rm")),
    );
    assert!(err.contains("scor"), "{err}");

    // teach: the chat model's answers become dialogues; with --judge only passing ones
    let taught = tmp.path().join("taught.jsonl");
    let said = ok(bin()
        .args([
            "teach",
            "--per-prompt",
            "2",
            "--max-tokens",
            "48",
            "--model",
        ])
        .arg(run.join("chat"))
        .arg("--prompts")
        .arg(run.join("world/rl_prompts.jsonl"))
        .arg("--output")
        .arg(&taught));
    assert!(said.contains("kept"), "{said}");
    let lines = std::fs::read_to_string(&taught).unwrap();
    assert!(!lines.is_empty());
    for l in lines.lines() {
        let c: ferrochat_text::Conversation = serde_json::from_str(l).unwrap();
        assert_eq!(
            c.messages.last().unwrap().role,
            ferrochat_text::Role::Assistant
        );
    }
    // judged: every kept answer passes the judge on its item
    let items: Vec<ferrochat_world::EvalItem> =
        std::fs::read_to_string(run.join("world/rl_prompts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let judged = tmp.path().join("judged.jsonl");
    let out = bin()
        .args(["teach", "--judge", "--temperature", "0", "--model"])
        .arg(run.join("chat"))
        .arg("--prompts")
        .arg(run.join("world/rl_prompts.jsonl"))
        .arg("--output")
        .arg(&judged)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        for l in std::fs::read_to_string(&judged).unwrap().lines() {
            let c: ferrochat_text::Conversation = serde_json::from_str(l).unwrap();
            let item = items
                .iter()
                .find(|it| it.messages[..] == c.messages[..c.messages.len() - 1])
                .expect("the prompt is a world item");
            let v = ferrochat_world::judge_item(item, &c.messages.last().unwrap().content);
            assert!(
                v.skills.iter().all(|s| s.passed) && v.zeroed.is_none(),
                "{l}"
            );
        }
    } else {
        // a model this small may pass nothing; then it says so
        assert!(said.contains("no answer was kept"), "{said}");
    }

    // prune: Wanda zeroes half of each row (measured on the shards), channel pruning
    // shrinks the MLP; both folders load and generate
    let wanda = tmp.path().join("wanda");
    let said = ok(bin()
        .args(["prune", "--method", "wanda", "--sparsity", "0.5", "--model"])
        .arg(run.join("chat"))
        .arg("--data")
        .arg(run.join("data"))
        .arg("--output")
        .arg(&wanda));
    assert!(
        said.contains("50.0% of the block projections' weights are zero"),
        "{said}"
    );
    // recovery fine-tuning keeps the pruned weights at zero
    let recovered = tmp.path().join("recovered");
    ok(bin()
        .args([
            "sft",
            "--quiet",
            "--steps",
            "3",
            "--keep-sparsity",
            "--base",
        ])
        .arg(&wanda)
        .arg("--data")
        .arg(run.join("world/sft.jsonl"))
        .arg("--output")
        .arg(&recovered));
    let (_, pruned_w) =
        ferrochat_model::checkpoint::load(&wanda, &candle_core::Device::Cpu).unwrap();
    let (_, rec_w) =
        ferrochat_model::checkpoint::load(&recovered, &candle_core::Device::Cpu).unwrap();
    let (mut zeros, mut moved) = (0usize, 0usize);
    for (name, p) in &pruned_w {
        if !name.ends_with("proj.weight") {
            continue;
        }
        let a = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = rec_w[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (x, y) in a.iter().zip(&b) {
            if *x == 0.0 {
                assert_eq!(*y, 0.0, "{name}: a pruned weight grew back");
                zeros += 1;
            } else if x != y {
                moved += 1;
            }
        }
    }
    assert!(
        zeros > 0 && moved > zeros / 2,
        "{zeros} zeros kept, {moved} weights trained"
    );
    let narrow = tmp.path().join("narrow");
    let said = ok(bin()
        .args([
            "prune",
            "--method",
            "mlp-channels",
            "--sparsity",
            "0.5",
            "--model",
        ])
        .arg(run.join("chat"))
        .arg("--output")
        .arg(&narrow));
    assert!(said.contains("channels per block"), "{said}");
    let (c0, _) =
        ferrochat_model::checkpoint::load(&run.join("chat"), &candle_core::Device::Cpu).unwrap();
    let (c1, _) = ferrochat_model::checkpoint::load(&narrow, &candle_core::Device::Cpu).unwrap();
    assert!(c1.intermediate_size < c0.intermediate_size && c1.num_params() < c0.num_params());
    let fewer_heads = tmp.path().join("fewer_heads");
    let said = ok(bin()
        .args(["prune", "--method", "heads", "--sparsity", "0.5", "--model"])
        .arg(run.join("chat"))
        .arg("--data")
        .arg(run.join("data"))
        .arg("--output")
        .arg(&fewer_heads));
    assert!(said.contains("query heads"), "{said}");
    let (c2, _) =
        ferrochat_model::checkpoint::load(&fewer_heads, &candle_core::Device::Cpu).unwrap();
    assert!(c2.num_attention_heads < c0.num_attention_heads && c2.num_params() < c0.num_params());
    for m in [&wanda, &narrow, &fewer_heads] {
        assert!(greedy_from(m).starts_with("The capital of"));
    }
    let err = fails(
        bin()
            .args(["prune", "--method", "wanda", "--model"])
            .arg(run.join("chat"))
            .arg("--output")
            .arg(tmp.path().join("wanda_without_data")),
    );
    assert!(err.contains("--data"), "{err}");

    // speculative decoding: with a draft, greedy text is the model's own
    let greedy = |extra: &[&str]| {
        ok(bin()
            .args([
                "generate",
                "--prompt",
                "The capital of",
                "--max-tokens",
                "30",
            ])
            .args(["--temperature", "0", "--model"])
            .arg(run.join("base"))
            .args(extra))
    };
    let draft = run.join("base").to_string_lossy().into_owned();
    assert_eq!(greedy(&["--draft", &draft, "--draft-k", "3"]), greedy(&[]));
    let err = fails(
        bin()
            .args(["generate", "--prompt", "x", "--draft"])
            .arg(tmp.path().join("nothing"))
            .arg("--model")
            .arg(run.join("base")),
    );
    assert!(err.contains("nothing"), "{err}");

    // the watermark: text written with a key is found with it and the tokenizer alone
    let write = |extra: &[&str]| {
        let text = ok(bin()
            .args([
                "generate",
                "--prompt",
                "The capital of",
                "--max-tokens",
                "100",
            ])
            .args([
                "--temperature",
                "1",
                "--top-k",
                "0",
                "--top-p",
                "1",
                "--model",
            ])
            .arg(run.join("base"))
            .args(extra));
        let path = tmp.path().join(format!("text{}.txt", extra.len()));
        std::fs::write(&path, text).unwrap();
        path
    };
    let marked = write(&["--watermark-key", "1234"]);
    let plain = write(&[]);
    let detect = |file: &Path, key: &str| -> serde_json::Value {
        let o = ok(bin()
            .args(["detect", "--json", "--key", key, "--tokenizer"])
            .arg(run.join("base"))
            .arg(file));
        serde_json::from_str(&o).unwrap()
    };
    let d = detect(&marked, "1234");
    assert_eq!(d["watermarked"], true, "{d}");
    for (file, key) in [(&plain, "1234"), (&marked, "999")] {
        let d = detect(file, key);
        assert_eq!(d["watermarked"], false, "{d}");
    }
    let err = fails(
        bin()
            .args(["generate", "--prompt", "x", "--watermark-key", "1"])
            .args(["--watermark-gamma", "1.5", "--model"])
            .arg(run.join("base")),
    );
    assert!(err.contains("--watermark-gamma"), "{err}");
    let bench = ok(bin()
        .args([
            "bench",
            "watermark",
            "--samples",
            "10",
            "--tokens",
            "60",
            "--model",
        ])
        .arg(run.join("base"))
        .arg("--human")
        .arg(run.join("world/pretrain.txt")));
    let v: serde_json::Value = serde_json::from_str(bench.lines().last().unwrap()).unwrap();
    let flagged = |i: usize| v["rows"][i]["flagged"].as_f64().unwrap();
    assert!(flagged(0) <= 0.1, "human text flagged: {bench}");
    assert!(flagged(2) >= 0.8, "watermarked text missed: {bench}");
}

fn sft(base: &Path, data: &Path, out: &Path, steps: u32) -> Command {
    let mut c = bin();
    c.args([
        "sft",
        "--quiet",
        "--batch",
        "4",
        "--lr",
        "3e-3",
        "--eval-every",
        "0",
    ])
    .args(["--checkpoint-every", "5", "--steps", &steps.to_string()])
    .arg("--base")
    .arg(base)
    .arg("--data")
    .arg(data)
    .arg("--output")
    .arg(out);
    c
}

#[test]
fn fine_tuning_learns_answers_reports_bad_dialogues_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let base = tmp.path().join("base");
    ok(&mut pretrain(&data, &base, 40));

    // the world's dialogues with three bad records among them
    let good = std::fs::read_to_string(tmp.path().join("world/sft.jsonl")).unwrap();
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    lines.insert(2, "{not json".into());
    lines.insert(5, r#"{"messages":[{"role":"bot","content":"hi"}]}"#.into());
    lines.insert(
        9,
        r#"{"messages":[{"role":"user","content":""},{"role":"assistant","content":"x"}]}"#.into(),
    );
    let dialogues = tmp.path().join("dialogues.jsonl");
    std::fs::write(&dialogues, lines.join("\n")).unwrap();

    let err = fails(sft(&base, &dialogues, &tmp.path().join("f"), 5).args(["--on-bad", "fail"]));
    assert!(err.contains("dialogues.jsonl:3: not JSON"), "{err}");
    let out = sft(&base, &dialogues, &tmp.path().join("chat"), 80)
        .arg("--val")
        .arg(tmp.path().join("world/sft_val.jsonl"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("skipped 3 bad dialogue(s)"), "{err}");
    for want in [
        ":3: not JSON",
        ":6: message 1: unknown role \"bot\"",
        ":10: message 1 (user): empty content",
    ] {
        assert!(err.contains(want), "no {want:?} in {err}");
    }
    // it learned to answer: the loss on held-out answers fell
    let chat = tmp.path().join("chat");
    let (before, after) = (
        meta_metric(&chat, "val_loss_before"),
        meta_metric(&chat, "val_loss"),
    );
    assert!(after < before - 0.5, "answer loss {before} -> {after}");

    // killed after its first checkpoint, then resumed: the same model as an unbroken run
    let unbroken = tmp.path().join("unbroken");
    ok(&mut sft(&base, &dialogues, &unbroken, 12));
    let killed = tmp.path().join("killed");
    kill_after_first_checkpoint(sft(&base, &dialogues, &killed, 12).stderr(Stdio::null()));
    ok(sft(&base, &dialogues, &killed, 12).arg("--resume"));
    assert_eq!(logits(&killed), logits(&unbroken), "resumed SFT differs");
    // a pretraining folder is not an SFT run to resume
    let clean = tmp.path().join("world/sft.jsonl");
    let err = fails(sft(&base, &clean, &base, 12).arg("--resume"));
    assert!(err.contains("holds a pretrain checkpoint"), "{err}");
}

#[test]
fn bench_ops_checks_each_op_against_the_cpu_reference() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ops.json");
    let out = ok(bin()
        .args([
            "bench", "ops", "--preset", "tiny", "--vocab", "50", "--batch", "2",
        ])
        .args(["--seq", "8", "--runs", "1", "--output"])
        .arg(&json));
    assert!(
        out.contains("attention") && out.contains("grad diff"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops = v["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 10, "{v}");
    for op in ops {
        assert!(op["gradient_diff"].as_f64().unwrap() < 1e-4, "{op}");
        assert!(op["forward_backward_ms"].as_f64().unwrap() > 0.0, "{op}");
    }
    if !cfg!(feature = "cuda") {
        let err = fails(bin().args(["bench", "ops", "--device", "cuda"]));
        assert!(err.contains("built without CUDA"), "{err}");
    }
}
