//! Reading the JSON-lines records people give a stage (dialogues, preferences) with the
//! `--on-bad` choice, and telling them about every record that was left out.

use std::path::Path;

use anyhow::Result;
use ferrochat_text::{OnBad, Records};

/// What to do with a record that cannot be used.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRecords {
    /// Report each (file:line: reason) and train without it
    Skip,
    /// Stop at the first, naming its line
    Fail,
}

impl From<BadRecords> for OnBad {
    fn from(b: BadRecords) -> Self {
        match b {
            BadRecords::Skip => OnBad::Skip,
            BadRecords::Fail => OnBad::Fail,
        }
    }
}

/// Reads one file of records with `read`, warning about bad ones on stderr (never
/// silent, even when quiet) and naming the count otherwise.
pub fn read<T>(
    path: &Path,
    what: &str,
    on_bad: BadRecords,
    quiet: bool,
    read: impl FnOnce(&Path, OnBad) -> ferrochat_text::Result<Records<T>>,
) -> Result<Vec<T>> {
    let r = read(path, on_bad.into())?;
    if !r.bad.is_empty() {
        eprintln!(
            "warning: skipped {} bad {what}(s) of {} in {}:\n{}",
            r.bad.len(),
            r.bad.len() + r.items.len(),
            path.display(),
            r.bad_report(20).trim_end()
        );
    } else if !quiet {
        eprintln!("{}: {} {what}s", path.display(), r.items.len());
    }
    Ok(r.items.into_iter().map(|(_, c)| c).collect())
}

/// Takes the last `1/every` of the records (at least one) as held-out data when there
/// are 20 or more, for a stage given no validation file.
pub fn hold_out<T>(train: &mut Vec<T>, every: usize) -> Vec<T> {
    if train.len() < 20 {
        return Vec::new();
    }
    let n = (train.len() / every).max(1);
    train.split_off(train.len() - n)
}

/// Where a preference stage reads its comparisons.
#[derive(clap::Args, Clone)]
pub struct PreferenceArgs {
    /// Preference records, JSON lines, pairs {"prompt":[messages],"chosen":..,"rejected":..}
    /// or ranked lists {"prompt":[...],"ranked":[best, ..., worst]} (several files allowed)
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<std::path::PathBuf>,
    /// Held-out preference records (default: 5% of --data)
    #[arg(long)]
    pub val: Option<std::path::PathBuf>,
    /// Bad records (not JSON, unknown role, empty or repeated answers): skip or fail
    #[arg(long, value_enum, default_value = "skip")]
    pub on_bad: BadRecords,
}

impl PreferenceArgs {
    /// The training and held-out records.
    pub fn load(
        &self,
        quiet: bool,
    ) -> Result<(
        Vec<ferrochat_text::RankedComparison>,
        Vec<ferrochat_text::RankedComparison>,
    )> {
        let read_one = |p: &Path| {
            read(
                p,
                "preference record",
                self.on_bad,
                quiet,
                ferrochat_text::read_preferences,
            )
        };
        let mut train = Vec::new();
        for p in &self.data {
            train.extend(read_one(p)?);
        }
        let val = match &self.val {
            Some(v) => read_one(v)?,
            None => hold_out(&mut train, 20),
        };
        Ok((train, val))
    }
}
