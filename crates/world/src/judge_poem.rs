//! Checking a poem's form (line count, characters per line, AABB rhyme) and theme.

use crate::style::is_han;
use crate::types::PoemSpec;

/// The poem's lines: non-empty lines, without an introduction that ends in a colon.
fn poem_lines(answer: &str) -> Vec<&str> {
    answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.ends_with(':') && !l.ends_with('：'))
        .collect()
}

fn last_word(line: &str) -> String {
    line.split_whitespace()
        .last()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Two lines rhyme when their last words differ but end in the same two letters.
pub fn rhymes(a: &str, b: &str) -> bool {
    let (x, y) = (last_word(a), last_word(b));
    let tail = |w: &str| w.chars().rev().take(2).collect::<String>();
    x.len() >= 2 && y.len() >= 2 && x != y && tail(&x) == tail(&y)
}

/// `Err(reason)` when the poem breaks the form or misses the theme.
pub fn check(answer: &str, spec: &PoemSpec) -> Result<(), String> {
    let lines = poem_lines(answer);
    if lines.len() != spec.lines {
        return Err(format!("{} lines instead of {}", lines.len(), spec.lines));
    }
    let mut distinct = lines.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != lines.len() {
        return Err("repeats a line".into());
    }
    if let Some(n) = spec.chars_per_line {
        for l in &lines {
            let han = l.chars().filter(|c| is_han(*c)).count();
            if han != n || l.chars().any(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("a line of {han} characters instead of {n}"));
            }
        }
    }
    if spec.rhyme {
        if lines.iter().any(|l| l.split_whitespace().count() < 3) {
            return Err("a line too short for verse".into());
        }
        if !(rhymes(lines[0], lines[1]) && rhymes(lines[2], lines[3])) {
            return Err("lines do not rhyme in pairs".into());
        }
    }
    let body = lines.join("\n").to_lowercase();
    if !spec.theme.is_empty() && !spec.theme.iter().any(|t| body.contains(&t.to_lowercase())) {
        return Err(format!("not about {}", spec.theme.join("/")));
    }
    Ok(())
}
