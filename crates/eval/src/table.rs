//! The scorecard: mean judge score and pass rate per skill and language, and overall.

use std::collections::BTreeMap;

use ferrochat_world::{EvalItem, Lang, Skill};
use serde::{Deserialize, Serialize};

use crate::Judged;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cell {
    pub n: usize,
    pub mean_score: f64,
    pub pass_rate: f64,
}

impl Cell {
    fn add(&mut self, score: f64, passed: bool) {
        let n = self.n as f64;
        self.mean_score = (self.mean_score * n + score) / (n + 1.0);
        self.pass_rate = (self.pass_rate * n + passed as u8 as f64) / (n + 1.0);
        self.n += 1;
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scorecard {
    /// skill -> language -> cell
    pub by_skill: BTreeMap<String, BTreeMap<String, Cell>>,
    pub by_lang: BTreeMap<String, Cell>,
    pub overall: Cell,
    /// Share of answers the model ended itself (not cut at the length limit).
    #[serde(default)]
    pub ended_rate: f64,
}

fn skill_name(s: Skill) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

impl Scorecard {
    pub fn from_judged(items: &[EvalItem], judged: &[Judged]) -> Self {
        let mut card = Scorecard::default();
        for (item, j) in items.iter().zip(judged) {
            let (score, passed) = (j.verdict.score, j.verdict.passed());
            let lang = item.lang.as_str().to_string();
            card.by_skill
                .entry(skill_name(item.skill))
                .or_default()
                .entry(lang.clone())
                .or_default()
                .add(score, passed);
            card.by_lang.entry(lang).or_default().add(score, passed);
            card.overall.add(score, passed);
        }
        let ended = judged.iter().filter(|j| j.ended).count();
        card.ended_rate = ended as f64 / judged.len().max(1) as f64;
        card
    }

    /// A markdown table: one row per skill, score and pass rate per language.
    pub fn markdown(&self) -> String {
        let cell = |c: Option<&Cell>| match c {
            Some(c) => format!("{:.2} ({:.0}%)", c.mean_score, 100.0 * c.pass_rate),
            None => "-".into(),
        };
        let mut s = String::from("| skill | English | Chinese | n |\n|---|---|---|---|\n");
        for skill in Skill::ALL {
            let name = skill_name(skill);
            if let Some(row) = self.by_skill.get(&name) {
                let n: usize = row.values().map(|c| c.n).sum();
                s += &format!(
                    "| {name} | {} | {} | {n} |\n",
                    cell(row.get(Lang::En.as_str())),
                    cell(row.get(Lang::Zh.as_str()))
                );
            }
        }
        s += &format!(
            "| **overall** | {} | {} | {} |\n",
            cell(self.by_lang.get("en")),
            cell(self.by_lang.get("zh")),
            self.overall.n
        );
        s += &format!(
            "\nOverall mean judge score {:.3}, {:.1}% of answers passed every skill they were held to; \
             {:.1}% ended by themselves (the rest ran to the length limit).\n",
            self.overall.mean_score,
            100.0 * self.overall.pass_rate,
            100.0 * self.ended_rate
        );
        s
    }

    /// A markdown table comparing scorecards side by side: mean judge score per skill
    /// (both languages together) for each named model.
    pub fn compare_markdown(cards: &[(&str, &Scorecard)]) -> String {
        let mut s = String::from("| skill |");
        for (name, _) in cards {
            s += &format!(" {name} |");
        }
        s += "\n|---|";
        s += &"---|".repeat(cards.len());
        s += "\n";
        let mean = |row: Option<&BTreeMap<String, Cell>>| {
            row.map(|r| {
                let n: usize = r.values().map(|c| c.n).sum();
                let sum: f64 = r.values().map(|c| c.mean_score * c.n as f64).sum();
                format!("{:.2}", sum / n.max(1) as f64)
            })
            .unwrap_or_else(|| "-".into())
        };
        for skill in Skill::ALL {
            let name = skill_name(skill);
            if cards.iter().all(|(_, c)| !c.by_skill.contains_key(&name)) {
                continue;
            }
            s += &format!("| {name} |");
            for (_, c) in cards {
                s += &format!(" {} |", mean(c.by_skill.get(&name)));
            }
            s += "\n";
        }
        s += "| **overall** |";
        for (_, c) in cards {
            s += &format!(" **{:.2}** |", c.overall.mean_score);
        }
        s += "\n| ended by itself |";
        for (_, c) in cards {
            s += &format!(" {:.0}% |", 100.0 * c.ended_rate);
        }
        s += "\n";
        s
    }
}
