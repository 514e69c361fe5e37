//! Short poems: Chinese quatrains (五言/七言绝句: four lines of five or seven characters)
//! and English four-line rhymes (AABB), built from small per-theme line banks so that the
//! form is always exact and the theme is always present.

use crate::types::{Lang, PoemSpec};
use rand::seq::IndexedRandom;
use rand::Rng;

pub use crate::poem_bank::{Theme, THEMES};

pub const FORMS_ZH: [(usize, &str); 2] = [(5, "五言绝句"), (7, "七言绝句")];

pub const PROMPTS: &[(Lang, bool, &str)] = &[
    (Lang::En, false, "Write a short poem about {t}."),
    (Lang::En, false, "Write a four-line rhyme about {t}."),
    (Lang::En, false, "Can you write me a poem about {t}?"),
    (Lang::En, false, "Please make up a little poem on {t}."),
    (Lang::En, false, "Give me four rhyming lines about {t}."),
    (
        Lang::En,
        true,
        "Compose a little rhyming verse on the theme of {t}.",
    ),
    (Lang::Zh, false, "写一首关于{t}的{f}。"),
    (Lang::Zh, false, "以{t}为题写一首{f}。"),
    (Lang::Zh, false, "请写一首{f}，主题是{t}。"),
    (Lang::Zh, false, "能不能以{t}为主题写首{f}？"),
    (Lang::Zh, false, "给我来一首写{t}的{f}吧。"),
    (Lang::Zh, true, "请围绕“{t}”这个主题作一首{f}。"),
];

pub fn spec(theme: &Theme, lang: Lang, chars: usize) -> PoemSpec {
    match lang {
        Lang::En => PoemSpec {
            lines: 4,
            chars_per_line: None,
            rhyme: true,
            theme: vec![theme.en_key.into()],
        },
        Lang::Zh => PoemSpec {
            lines: 4,
            chars_per_line: Some(chars),
            rhyme: false,
            theme: vec![theme.zh.into()],
        },
    }
}

/// Four lines on `theme`: a quatrain of `chars`-character lines, or two rhyming couplets.
pub fn lines(theme: &Theme, lang: Lang, chars: usize, rng: &mut impl Rng) -> Vec<String> {
    match lang {
        Lang::En => {
            let mut idx: Vec<usize> = (0..theme.couplets.len()).collect();
            let a = idx.remove(rng.random_range(0..idx.len()));
            let b = idx[rng.random_range(0..idx.len())];
            let (c, d) = (theme.couplets[a], theme.couplets[b]);
            let last = d.1.trim_end_matches(',').trim_end_matches('.').to_string() + ".";
            vec![
                c.0.into(),
                c.1.trim_end_matches('.').to_string() + ",",
                d.0.into(),
                last,
            ]
        }
        Lang::Zh => {
            let bank: &[&str] = if chars == 5 {
                &theme.five
            } else {
                &theme.seven
            };
            let with_theme: Vec<&str> = bank
                .iter()
                .copied()
                .filter(|l| l.contains(theme.zh))
                .collect();
            let first = with_theme.choose(rng).copied().unwrap_or(bank[0]);
            let mut rest: Vec<&str> = bank.iter().copied().filter(|l| *l != first).collect();
            let mut out = vec![first];
            for _ in 0..3 {
                out.push(rest.remove(rng.random_range(0..rest.len())));
            }
            out.iter()
                .enumerate()
                .map(|(i, l)| format!("{l}{}", if i % 2 == 0 { "，" } else { "。" }))
                .collect()
        }
    }
}

/// The intro line of an answer that presents a poem.
pub fn intro(theme: &Theme, lang: Lang, chars: usize) -> String {
    match lang {
        Lang::En => format!("Here is a short poem about {}:", theme.en),
        Lang::Zh => format!(
            "这是一首关于{}的{}：",
            theme.zh,
            FORMS_ZH
                .iter()
                .find(|f| f.0 == chars)
                .map_or("绝句", |f| f.1)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::style::is_han;

    #[test]
    fn banks_have_exact_forms_and_rhymes() {
        for t in &THEMES {
            for l in t.five {
                assert_eq!(l.chars().filter(|c| is_han(*c)).count(), 5, "{l}");
            }
            for l in t.seven {
                assert_eq!(l.chars().filter(|c| is_han(*c)).count(), 7, "{l}");
            }
            assert!(
                t.five.iter().any(|l| l.contains(t.zh)) && t.seven.iter().any(|l| l.contains(t.zh))
            );
            for (a, b) in t.couplets {
                assert!(crate::judge_poem::rhymes(a, b), "{a} / {b}");
                assert!(format!("{a} {b}").to_lowercase().contains(t.en_key), "{a}");
            }
        }
    }
}
