//! Crash safety: `pretrain`, `sft` and `ppo` killed with SIGKILL at random moments, several times
//! each, then resumed. After every kill the checkpoint on disk is whole (it loads and
//! answers), and the run that finally completes ends with exactly the weights of a run
//! that was never interrupted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{bin, logits, run_ok};
use rand::{Rng, SeedableRng};

/// Runs `stage(resume)` to the end once unbroken, then again killed `kills` times at
/// random points and resumed; compares the two.
fn survives_kills(
    name: &str,
    stage: impl Fn(&Path, bool) -> Command,
    work: &Path,
    kills: usize,
    seed: u64,
) {
    let unbroken = work.join(format!("{name}_unbroken"));
    let t = Instant::now();
    run_ok(&mut stage(&unbroken, false));
    let took = t.elapsed();
    let broken = work.join(format!("{name}_broken"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut whole_after = 0;
    let mut interrupted = 0;
    for i in 0..kills {
        let resume = broken.join("meta.json").exists();
        let mut child = stage(&broken, resume).spawn().unwrap();
        // anywhere in the run, checkpoint writes included; a resumed run is shorter, so
        // the kills come early enough to land in it too
        let at = took.mul_f64(rng.random_range(0.1..0.6));
        std::thread::sleep(at);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            break; // it finished before the kill landed
        }
        interrupted += 1;
        if broken.join("meta.json").exists() {
            // whatever the moment, the folder is a complete checkpoint
            let l = logits(&broken);
            assert!(l.contains('['), "kill {i} of {name}: {l}");
            whole_after += 1;
        }
    }
    let resume = broken.join("meta.json").exists();
    run_ok(&mut stage(&broken, resume));
    assert_eq!(
        logits(&broken),
        logits(&unbroken),
        "{name}: the run killed {kills} times and resumed differs from the unbroken one"
    );
    // the first kill always lands; later ones land unless the run finished first
    assert!(interrupted >= 1, "{name}: no kill interrupted the run");
    eprintln!("{name}: {interrupted} kills landed mid-run, {whole_after} after a checkpoint");
    assert!(whole_after > 0, "{name}: no kill landed after a checkpoint");
}

#[test]
fn pretraining_fine_tuning_and_ppo_survive_sigkill_at_random_points() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::prepared(tmp.path(), &common::SMALL);
    let pretrain = |out: &Path, resume: bool| {
        let mut c = bin();
        c.args([
            "pretrain", "--quiet", "--preset", "tiny", "--seq", "128", "--batch", "4",
        ])
        .args([
            "--steps",
            "80",
            "--checkpoint-every",
            "7",
            "--eval-every",
            "0",
            "--lr",
            "4e-3",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(out)
        .stdout(std::process::Stdio::null());
        if resume {
            c.arg("--resume");
        }
        c
    };
    survives_kills("pretrain", pretrain, tmp.path(), 4, 11);

    let base = tmp.path().join("pretrain_unbroken");
    let dialogues = tmp.path().join("world/sft.jsonl");
    let sft = |out: &Path, resume: bool| {
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
        .args(["--steps", "40", "--checkpoint-every", "3"])
        .arg("--base")
        .arg(&base)
        .arg("--data")
        .arg(&dialogues)
        .arg("--output")
        .arg(out)
        .stdout(std::process::Stdio::null());
        if resume {
            c.arg("--resume");
        }
        c
    };
    survives_kills("sft", sft, tmp.path(), 4, 12);

    // PPO: rollouts, the value head and the KL controller's state all resume exactly
    let chat = tmp.path().join("sft_unbroken");
    let rm = tmp.path().join("rm");
    run_ok(
        bin()
            .args([
                "reward", "--quiet", "--steps", "4", "--batch", "4", "--base",
            ])
            .arg(&chat)
            .arg("--data")
            .arg(tmp.path().join("world/comparisons.jsonl"))
            .arg("--output")
            .arg(&rm),
    );
    let prompts = tmp.path().join("world/rl_prompts.jsonl");
    let ppo = |out: &Path, resume: bool| {
        let mut c = bin();
        c.args([
            "ppo",
            "--quiet",
            "--iterations",
            "10",
            "--prompts-per-iter",
            "4",
        ])
        .args([
            "--max-new-tokens",
            "16",
            // every iteration: the held-out evaluations before and after take a good
            // share of the run, and kills must also land after a checkpoint
            "--checkpoint-every",
            "1",
            "--val-prompts",
            "4",
        ])
        .args(["--eval-every", "0", "--policy"])
        .arg(&chat)
        .arg("--reward")
        .arg(&rm)
        .arg("--prompts")
        .arg(&prompts)
        .arg("--output")
        .arg(out)
        .stdout(std::process::Stdio::null());
        if resume {
            c.arg("--resume");
        }
        c
    };
    survives_kills("ppo", ppo, tmp.path(), 4, 13);
}
