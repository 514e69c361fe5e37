//! The report card of a run folder, rebuilt from what the stages left there: each stage
//! folder's `meta.json`, `config.json` and `metrics.jsonl`, and the judged evaluations
//! `eval_*.json`. It draws the plots into `plots/` and returns the markdown: the
//! environment, every stage's size, time, speed and final figures, the curves (loss,
//! learning rate, reward and KL, reward-model accuracy), judged score per skill per
//! stage, and the compute spent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::plot::{bar_chart, line_chart, Series};
use crate::{EvalError, Result, Scorecard};

/// Watts per busy core for the energy estimate: a server core's share of a CPU package
/// under load (a 2-core slice of a ~150 W, ~32-core part draws about this much per core).
pub const WATTS_PER_CORE: f64 = 5.0;

/// The folders of a speedrun, in pipeline order; others follow alphabetically.
const ORDER: [&str; 6] = ["base", "chat", "reward", "ppo", "dpo", "grpo"];

/// One stage's record.
#[derive(Debug, Clone)]
pub struct StageRecord {
    /// Its folder's name.
    pub name: String,
    /// `meta.json`'s stage: pretrain, sft, reward, ppo, dpo, grpo, ...
    pub stage: String,
    pub params: u64,
    /// Step records, one per step (the last written wins after a resume).
    pub steps: Vec<Value>,
    pub evals: Vec<Value>,
}

impl StageRecord {
    fn series(&self, records: &[Value], key: &str) -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
            .collect()
    }

    /// Wall time: the last step's elapsed seconds.
    pub fn wall_secs(&self) -> f64 {
        self.steps
            .last()
            .and_then(|s| s["elapsed_secs"].as_f64())
            .unwrap_or(0.0)
    }

    /// Tokens trained on (the last step's running count).
    pub fn tokens(&self) -> f64 {
        self.steps
            .last()
            .and_then(|s| s["tokens"].as_f64())
            .unwrap_or(0.0)
    }

    /// Training FLOPs, 6 per parameter per token (forward and backward), the usual estimate.
    pub fn flops(&self) -> f64 {
        6.0 * self.params as f64 * self.tokens()
    }

    fn last(&self, records: &[Value], key: &str) -> Option<f64> {
        records.iter().rev().find_map(|r| r[key].as_f64())
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Input(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| EvalError::Input(format!("{} is not valid JSON: {e}", path.display())))
}

/// Reads every stage folder of `run` that has a `meta.json` and a `metrics.jsonl`.
pub fn load_stages(run: &Path) -> Result<Vec<StageRecord>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run)
        .map_err(|e| {
            EvalError::Input(format!("cannot read the run folder {}: {e}", run.display()))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("meta.json").is_file() && p.join("metrics.jsonl").is_file())
        .collect();
    let rank = |p: &PathBuf| {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (ORDER.iter().position(|o| *o == n).unwrap_or(ORDER.len()), n)
    };
    dirs.sort_by_key(rank);
    let mut out = Vec::new();
    for dir in dirs {
        let meta = read_json(&dir.join("meta.json"))?;
        // a folder without a readable config counts no parameters (and no FLOPs)
        let params = ferrochat_model::checkpoint::load_config(&dir)
            .map(|c| c.num_params() as u64)
            .unwrap_or(0);
        let file = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| EvalError::Input(format!("cannot read {}: {e}", file.display())))?;
        let mut steps: BTreeMap<u64, Value> = BTreeMap::new();
        let mut evals: BTreeMap<u64, Value> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // a line cut by a kill mid-write is the only bad one there can be: skip it
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                eprintln!("{}:{}: not JSON, skipped", file.display(), i + 1);
                continue;
            };
            let step = v["step"].as_u64().unwrap_or(0);
            match v["kind"].as_str() {
                Some("step") => {
                    steps.insert(step, v);
                }
                Some("eval") => {
                    evals.insert(step, v);
                }
                _ => {}
            }
        }
        out.push(StageRecord {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            stage: meta["stage"].as_str().unwrap_or("?").to_string(),
            params,
            steps: steps.into_values().collect(),
            evals: evals.into_values().collect(),
        });
    }
    Ok(out)
}

/// What the machine and build were.
pub fn environment() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| cores.to_string());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    vec![
        ("CPU".into(), cpu),
        (
            "cores / threads used".into(),
            format!("{cores} / {threads}"),
        ),
        (
            "OS".into(),
            format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        ),
        ("ferrochat".into(), env!("CARGO_PKG_VERSION").into()),
        ("git commit".into(), commit),
    ]
}

fn fmt_si(x: f64) -> String {
    let (v, unit) = if x >= 1e15 {
        (x / 1e15, "P")
    } else if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else {
        (x, "")
    };
    format!("{v:.2} {unit}")
}

/// Draws the plots into `run/plots/` and returns the report card's markdown (image links
/// relative to `run`).
pub fn card(run: &Path) -> Result<String> {
    let stages = load_stages(run)?;
    let plots = run.join("plots");
    std::fs::create_dir_all(&plots)
        .map_err(|e| EvalError::Input(format!("cannot create {}: {e}", plots.display())))?;
    let threads: f64 = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0)
        });
    let mut md = String::from("## Report card\n\n### Environment\n\n| | |\n|---|---|\n");
    for (k, v) in environment() {
        md += &format!("| {k} | {v} |\n");
    }
    md += "\n### Stages\n\n| folder | stage | parameters | steps | tokens | wall s | tokens/s | last train loss | last held-out figure |\n|---|---|---|---|---|---|---|---|---|\n";
    for s in &stages {
        let held = s
            .evals
            .last()
            .map(|e| {
                ["judged", "accuracy", "val_loss", "val_bpb"]
                    .iter()
                    .find_map(|k| e[*k].as_f64().map(|v| format!("{k} {v:.3}")))
                    .unwrap_or_else(|| "-".into())
            })
            .unwrap_or_else(|| "-".into());
        let wall = s.wall_secs();
        md += &format!(
            "| {} | {} | {:.2}M | {} | {} | {:.0} | {:.0} | {} | {} |\n",
            s.name,
            s.stage,
            s.params as f64 / 1e6,
            s.steps.len(),
            fmt_si(s.tokens()).trim(),
            wall,
            s.tokens() / wall.max(1e-9),
            s.last(&s.steps, "loss")
                .map(|l| format!("{l:.3}"))
                .unwrap_or_else(|| "-".into()),
            held
        );
    }
    let mut images: Vec<(String, String)> = Vec::new();
    let mut draw = |file: &str, caption: &str, f: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
        let path = plots.join(file);
        match f(&path) {
            Ok(()) => images.push((caption.to_string(), format!("plots/{file}"))),
            // a stage with nothing to draw (no steps yet) leaves its plot out
            Err(e) => eprintln!("report: {e}"),
        }
        Ok(())
    };
    for s in &stages {
        let mut series = vec![Series::new("train loss", s.series(&s.steps, "loss"))];
        let val = s.series(&s.evals, "val_loss");
        if !val.is_empty() {
            series.push(Series::new("held-out loss", val));
        }
        if s.steps.is_empty() {
            continue;
        }
        let title = format!("{} ({}): loss", s.name, s.stage);
        draw(&format!("loss_{}.png", s.name), &title, &|p| {
            line_chart(p, &title, "step", "loss", &series)
        })?;
    }
    let lrs: Vec<Series> = stages
        .iter()
        .map(|s| Series::new(s.name.clone(), s.series(&s.steps, "lr")))
        .collect();
    draw("lr.png", "learning rate per step", &|p| {
        line_chart(p, "learning rate", "step", "learning rate", &lrs)
    })?;
    let rl: Vec<&StageRecord> = stages
        .iter()
        .filter(|s| s.stage == "ppo" || s.stage == "grpo")
        .collect();
    if !rl.is_empty() {
        let reward: Vec<Series> = rl
            .iter()
            .map(|s| {
                Series::new(
                    format!("{} rollout reward", s.name),
                    s.series(&s.steps, "reward"),
                )
            })
            .chain(rl.iter().map(|s| {
                Series::new(
                    format!("{} judged (held-out)", s.name),
                    s.series(&s.evals, "judged"),
                )
            }))
            .collect();
        draw(
            "reward.png",
            "reward per step and judged score on held-out prompts (PPO, GRPO)",
            &|p| line_chart(p, "reward and judged score", "step", "score", &reward),
        )?;
        let kl: Vec<Series> = rl
            .iter()
            .map(|s| Series::new(s.name.clone(), s.series(&s.steps, "kl")))
            .collect();
        draw(
            "kl.png",
            "KL to the starting model per step (nats per answer)",
            &|p| line_chart(p, "KL to the SFT model", "step", "KL (nats)", &kl),
        )?;
    }
    for s in stages
        .iter()
        .filter(|s| s.stage == "reward" || s.stage == "dpo")
    {
        let series = vec![
            Series::new("train batch", s.series(&s.steps, "accuracy")),
            Series::new("held-out pairs", s.series(&s.evals, "accuracy")),
        ];
        let title = format!("{} ({}): preference accuracy", s.name, s.stage);
        draw(&format!("accuracy_{}.png", s.name), &title, &|p| {
            line_chart(p, &title, "step", "accuracy", &series)
        })?;
    }
    // judged score per skill per stage, from the evaluations present
    let mut cards: Vec<(String, Scorecard)> = Vec::new();
    for name in ["base", "sft", "ppo", "dpo", "grpo"] {
        let f = run.join(format!("eval_{name}.json"));
        if let Ok(v) = read_json(&f) {
            if let Ok(card) = serde_json::from_value::<Scorecard>(v["scorecard"].clone()) {
                cards.push((name.to_string(), card));
            }
        }
    }
    if !cards.is_empty() {
        let skills: Vec<String> = cards[0].1.by_skill.keys().cloned().collect();
        let mut groups = skills.clone();
        groups.push("overall".into());
        let series: Vec<(String, Vec<f64>)> = cards
            .iter()
            .map(|(n, c)| {
                let mut v: Vec<f64> = skills
                    .iter()
                    .map(|sk| {
                        let cells = c.by_skill.get(sk);
                        let (sum, n) = cells
                            .map(|m| {
                                m.values().fold((0.0, 0usize), |(s, n), c| {
                                    (s + c.mean_score * c.n as f64, n + c.n)
                                })
                            })
                            .unwrap_or((0.0, 0));
                        if n == 0 {
                            f64::NAN
                        } else {
                            sum / n as f64
                        }
                    })
                    .collect();
                v.push(c.overall.mean_score);
                (n.clone(), v)
            })
            .collect();
        draw("judged.png", "judged score per skill, every stage", &|p| {
            bar_chart(
                p,
                "mean judge score on held-out prompts",
                "score",
                &groups,
                &series,
            )
        })?;
    }
    // compute
    let mut flops = 0.0;
    let mut secs = 0.0;
    let mut rows = String::new();
    for s in &stages {
        let (f, w) = (s.flops(), s.wall_secs());
        flops += f;
        secs += w;
        rows += &format!(
            "| {} | {} | {:.4} | {:.2} |\n",
            s.name,
            fmt_si(f).trim(),
            w * threads / 3600.0,
            w * threads / 3600.0 * WATTS_PER_CORE
        );
    }
    let compute: Vec<(String, Vec<f64>)> = vec![(
        "training FLOPs".into(),
        stages.iter().map(|s| s.flops()).collect(),
    )];
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    if !stages.is_empty() {
        draw("compute.png", "training FLOPs per stage", &|p| {
            bar_chart(p, "training compute per stage", "FLOPs", &names, &compute)
        })?;
    }
    md += "\n### Plots\n\n";
    for (caption, file) in &images {
        md += &format!("**{caption}**\n\n![{caption}]({file})\n\n");
    }
    md += &format!(
        "### Compute\n\nTraining FLOPs are estimated as 6 x parameters x tokens (forward and backward; \
         generation during PPO/GRPO and evaluations not counted); core-hours are wall time x {threads} \
         threads; energy assumes {WATTS_PER_CORE} W per busy core.\n\n\
         | stage | training FLOPs | core-hours | energy (Wh) |\n|---|---|---|---|\n{rows}\
         | **all** | {} | {:.4} | {:.2} |\n",
        fmt_si(flops).trim(),
        secs * threads / 3600.0,
        secs * threads / 3600.0 * WATTS_PER_CORE
    );
    Ok(md)
}
