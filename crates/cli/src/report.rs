//! `ferrochat report`: rebuild a run folder's `report.md` and its plots from the metrics
//! files the stages wrote. Every training stage refreshes its run folder's report when it
//! finishes, so the report grows with the run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The run folder (stage folders with meta.json and metrics.jsonl, eval_*.json)
    #[arg(long, default_value = "runs/speedrun")]
    pub run: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let path = write(&a.run)?;
    println!("report: {}", path.display());
    Ok(())
}

/// Writes `run/report.md`: the speedrun's own summary (`speedrun.md`) when there is one,
/// then the report card with its plots.
pub fn write(run: &Path) -> Result<PathBuf> {
    let card = ferrochat_eval::report::card(run)
        .with_context(|| format!("cannot build the report of {}", run.display()))?;
    let mut md = match std::fs::read_to_string(run.join("speedrun.md")) {
        Ok(summary) => summary + "\n",
        Err(_) => format!("# ferrochat report\n\nRun folder `{}`.\n\n", run.display()),
    };
    md += &card;
    let path = run.join("report.md");
    ferrochat_text::write_atomic(&path, md.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// After a stage wrote `output`, refreshes the report of the run folder around it. A
/// report that cannot be built is a warning, never the stage's failure.
pub fn refresh(output: &Path) {
    let run = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    update(&run);
}

/// Rebuilds the report of `run`; a failure is a warning.
pub fn update(run: &Path) {
    if let Err(e) = write(run) {
        eprintln!("warning: the report was not updated: {e:#}");
    }
}
