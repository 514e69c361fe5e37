//! Data-parallel training over MPI: `mpirun -np 2` on loopback follows the loss curve of
//! one process with the same global batch, resumes exactly, and only rank 0 writes.
//! Needs the `mpi` build and Open MPI's `mpirun` (the test script installs both).
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, logits, run_ok};

fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &np.to_string(), "--oversubscribe"])
        // the test machines run as root; Open MPI refuses that unless told
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,vader")
        .arg(env!("CARGO_BIN_EXE_ferrochat"));
    c
}

/// The (step, loss) lines of a run's metrics.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

fn assert_close(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts differ");
    for ((sa, la), (sb, lb)) in a.iter().zip(b) {
        assert_eq!(sa, sb, "{what}");
        // the same sums in another order: float rounding, nothing more
        assert!(
            (la - lb).abs() <= 1e-4 * la.abs().max(1.0),
            "{what}: step {sa}: loss {la} vs {lb}"
        );
    }
}

#[test]
fn two_ranks_train_like_one_process_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::prepared(tmp.path(), &common::SMALL);
    let pretrain = |c: &mut Command, batch: &str, out: &Path, steps: &str| {
        c.args(["pretrain", "--quiet", "--preset", "tiny", "--seq", "64"])
            .args([
                "--warmup",
                "5",
                "--eval-every",
                "10",
                "--checkpoint-every",
                "10",
            ])
            // a schedule that does not depend on the step count, so a run stopped at
            // step 20 and resumed to 30 follows the 30-step run
            .args(["--schedule", "constant"])
            .args(["--batch", batch, "--steps", steps])
            .arg("--data")
            .arg(&data)
            .arg("--output")
            .arg(out)
            .stdout(std::process::Stdio::null());
    };
    let one = tmp.path().join("one");
    let mut c = bin();
    pretrain(&mut c, "8", &one, "30");
    run_ok(&mut c);
    let two = tmp.path().join("two");
    let mut c = mpirun(2);
    pretrain(&mut c, "4", &two, "30");
    run_ok(c.args(["--world-size", "2"]));
    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!(l1.len(), 30, "one log line per step, from rank 0 only");
    assert_close(&l1, &l2, "2 ranks x 4 rows vs 1 process x 8 rows");
    assert!(l2[29].1 < l2[0].1 - 0.5, "it learned: {l2:?}");

    // stopped at step 20 and resumed under the launcher, it ends as the unbroken run
    let resumed = tmp.path().join("resumed");
    let mut c = mpirun(2);
    pretrain(&mut c, "4", &resumed, "20");
    run_ok(&mut c);
    let mut c = mpirun(2);
    pretrain(&mut c, "4", &resumed, "30");
    run_ok(c.arg("--resume"));
    assert_close(&losses(&resumed), &l2, "resumed vs unbroken, 2 ranks");
    assert_eq!(logits(&resumed), logits(&two));

    // a resume with another number of ranks would change the global batch: refused
    let mut c = mpirun(1);
    pretrain(&mut c, "4", &resumed, "40");
    let o = c.arg("--resume").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("world_size"), "{err}");

    // fine-tuning too: both ranks step together from the pretrained model
    let chat = tmp.path().join("chat");
    let mut c = mpirun(2);
    c.args([
        "sft",
        "--quiet",
        "--batch",
        "2",
        "--steps",
        "8",
        "--eval-every",
        "0",
    ])
    .arg("--base")
    .arg(&two)
    .arg("--data")
    .arg(tmp.path().join("world/sft.jsonl"))
    .arg("--output")
    .arg(&chat)
    .stdout(std::process::Stdio::null());
    run_ok(&mut c);
    assert_eq!(losses(&chat).len(), 8);
    assert!(logits(&chat).contains('['));
}

#[test]
fn several_ranks_need_a_launcher_and_a_training_command() {
    let o = bin()
        .args([
            "pretrain",
            "--world-size",
            "2",
            "--data",
            "nowhere",
            "--output",
        ])
        .arg(std::env::temp_dir().join("ferrochat-dp-never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("mpirun -np 2"), "{err}");

    let o = mpirun(2)
        .args(["generate", "--model", "nowhere", "--prompt", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("only the training commands"), "{err}");
}

#[test]
fn preference_and_reinforcement_stages_train_data_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::prepared(tmp.path(), &common::SMALL);
    let base = tmp.path().join("base");
    run_ok(
        bin()
            .args(["pretrain", "--quiet", "--preset", "tiny", "--seq", "64"])
            .args(["--batch", "8", "--steps", "20", "--eval-every", "0"])
            .arg("--data")
            .arg(&data)
            .arg("--output")
            .arg(&base)
            .stdout(std::process::Stdio::null()),
    );
    let comparisons = tmp.path().join("world/comparisons.jsonl");
    // the same 6 steps of 4 records: one process with batch 4, two ranks with 2 each
    let stage = |c: &mut Command, stage: &str, batch: &str, out: &Path| {
        c.args([
            stage,
            "--quiet",
            "--steps",
            "6",
            "--eval-every",
            "0",
            "--warmup",
            "2",
        ])
        .args(["--batch", batch, "--lr", "1e-3"])
        .arg("--base")
        .arg(&base)
        .arg("--data")
        .arg(&comparisons)
        .arg("--output")
        .arg(out)
        .stdout(std::process::Stdio::null());
        if stage == "dpo" {
            c.args(["--kl-samples", "0"]);
        }
    };
    for name in ["reward", "dpo"] {
        let one = tmp.path().join(format!("{name}1"));
        let mut c = bin();
        stage(&mut c, name, "4", &one);
        run_ok(&mut c);
        let two = tmp.path().join(format!("{name}2"));
        let mut c = mpirun(2);
        stage(&mut c, name, "2", &two);
        run_ok(c.args(["--world-size", "2"]));
        let (l1, l2) = (losses(&one), losses(&two));
        assert_eq!(
            l1.len(),
            6,
            "{name}: one log line per step, from rank 0 only"
        );
        assert_close(&l1, &l2, &format!("{name}: 2 ranks x 2 records vs 1 x 4"));
        assert!(
            two.join(format!("{name}.json")).exists(),
            "{name}: rank 0 reports"
        );
    }
    // PPO and GRPO: each rank answers half of every iteration's prompts (its own samples,
    // so not one process's run to the bit) and trains on half of every minibatch; the
    // ranks end with equal weights (checked at the end of every data-parallel run), and
    // rank 0 alone logs and reports
    let rl = |c: &mut Command, algo: &str, per_iter: &str, iters: &str, out: &Path| {
        c.args([
            algo,
            "--quiet",
            "--iterations",
            iters,
            "--max-new-tokens",
            "12",
        ])
        .args(["--prompts-per-iter", per_iter, "--minibatch", "4"])
        .args(["--val-prompts", "4", "--eval-every", "0"])
        .arg("--policy")
        .arg(&base)
        .arg("--prompts")
        .arg(tmp.path().join("world/rl_prompts.jsonl"))
        .arg("--output")
        .arg(out)
        .stdout(std::process::Stdio::null());
        if algo == "ppo" {
            c.arg("--reward").arg(tmp.path().join("reward1"));
        }
    };
    for algo in ["ppo", "grpo"] {
        let out = tmp.path().join(algo);
        let mut c = mpirun(2);
        rl(&mut c, algo, "4", "2", &out);
        run_ok(c.args(["--world-size", "2"]));
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("{algo}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(summary["iterations"], 2, "{algo}: {summary}");
        assert!(
            summary["reward_last"].as_f64().unwrap().is_finite(),
            "{summary}"
        );
        assert!(!losses(&out).is_empty(), "{algo}: rank 0 logs");
        // stopped after the first iteration and resumed under the launcher: the same
        // samples and the same model as the unbroken run
        let resumed = tmp.path().join(format!("{algo}-resumed"));
        let mut c = mpirun(2);
        rl(&mut c, algo, "4", "1", &resumed);
        run_ok(c.args(["--world-size", "2"]));
        let mut c = mpirun(2);
        rl(&mut c, algo, "4", "2", &resumed);
        run_ok(c.args(["--world-size", "2", "--resume"]));
        assert_close(&losses(&resumed), &losses(&out), &format!("{algo} resumed"));
        assert_eq!(
            logits(&resumed),
            logits(&out),
            "{algo}: resumed vs unbroken"
        );
        // a split that leaves a rank short is refused up front
        let mut c = mpirun(2);
        rl(
            &mut c,
            algo,
            "3",
            "2",
            &tmp.path().join(format!("{algo}-odd")),
        );
        let o = c.args(["--world-size", "2"]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("--prompts-per-iter 3 does not split evenly"),
            "{err}"
        );
    }
}
