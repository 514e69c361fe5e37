//! Stating facts and checking them: how a value is written in each language, the gold
//! answer to a question about an entity, a plausible wrong answer, and the [`Expect`]
//! that lets the judge tell them apart.

use crate::phrases::ANSWERS;
use crate::tables::{world, Attr, Entity, Value};
use crate::tpl::{capitalize, render};
use crate::types::{Expect, Lang};

const ORDINALS_EN: [&str; 10] = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
];
const DIGITS_ZH: [&str; 10] = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十"];

/// How prose writes a value.
pub fn show(v: &Value, lang: Lang) -> String {
    match (v, lang) {
        (Value::Text { show, .. }, l) => show[l.idx()].clone(),
        (Value::Int(n), _) => n.to_string(),
        (Value::Ordinal(n), Lang::En) => ORDINALS_EN
            .get(*n as usize - 1)
            .unwrap_or(&"last")
            .to_string(),
        (Value::Ordinal(n), Lang::Zh) => {
            format!("第{}", DIGITS_ZH.get(*n as usize - 1).unwrap_or(&"几"))
        }
        (Value::Millions(m), Lang::En) if *m >= 1000.0 => {
            format!("about {} billion", trim(m / 1000.0))
        }
        (Value::Millions(m), Lang::En) => format!("about {} million", trim(*m)),
        (Value::Millions(m), Lang::Zh) if *m >= 100.0 => format!("约{}亿", trim(m / 100.0)),
        (Value::Millions(m), Lang::Zh) => format!("约{}万", (m * 100.0).round()),
    }
}

/// One decimal at most: 1.4, 68.
fn trim(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

/// The entity's name as it stands in a sentence of `lang`.
pub fn name(e: &Entity, lang: Lang) -> &str {
    &e.name[lang.idx()]
}

fn small(e: &Entity, lang: Lang) -> &str {
    e.small
        .as_ref()
        .map(|s| s[lang.idx()].as_str())
        .unwrap_or("")
}

/// The gold answer to a question about `attr` of `e`, optionally stating `value` instead
/// of the true one (which is how wrong answers are written).
pub fn answer_with(e: &Entity, attr: Attr, lang: Lang, value: &Value) -> String {
    if attr == Attr::Moons {
        if let Value::Int(n @ 0..=1) = value {
            return match (n, lang) {
                (0, Lang::En) => format!("{} has no known moons.", name(e, lang)),
                (0, _) => format!("{}没有已知的卫星。", name(e, lang)),
                (_, Lang::En) => format!("{} has 1 known moon.", name(e, lang)),
                _ => format!("{}有1颗已知的卫星。", name(e, lang)),
            };
        }
    }
    let tpl = ANSWERS
        .iter()
        .find(|a| a.0 == attr && a.1 == lang)
        .map(|a| a.2)
        .unwrap_or("{v}");
    let v = show(value, lang);
    capitalize(&render(
        tpl,
        &[("e", name(e, lang)), ("v", &v), ("s", small(e, lang))],
    ))
}

pub fn answer(e: &Entity, attr: Attr, lang: Lang) -> String {
    match e.get(attr) {
        Some(v) => answer_with(e, attr, lang, v),
        None => String::new(),
    }
}

/// The shortest correct answer, for "be brief".
pub fn brief(e: &Entity, attr: Attr, lang: Lang) -> String {
    let Some(v) = e.get(attr) else {
        return String::new();
    };
    let end = if lang == Lang::En { "." } else { "。" };
    match (attr, v, lang) {
        (Attr::Moons, Value::Int(0), Lang::En) => "No known moons.".into(),
        (Attr::Moons, Value::Int(0), Lang::Zh) => "没有卫星。".into(),
        (Attr::Size, _, _) => {
            let sep = if lang == Lang::En { " " } else { "" };
            format!("{}{sep}{}{end}", show(v, lang), small(e, lang))
        }
        _ => format!("{}{end}", capitalize(&show(v, lang))),
    }
}

/// A believable wrong value: another entity's value, or a number that is off.
pub fn wrong_value(e: &Entity, attr: Attr, pool: &[usize], pick: usize) -> Option<Value> {
    let truth = e.get(attr)?;
    match truth {
        Value::Millions(m) => {
            let lower = (m / 3.0).round();
            Some(Value::Millions(if pick.is_multiple_of(2) || lower < 1.0 {
                (m * 3.0).round()
            } else {
                lower
            }))
        }
        Value::Int(n) if attr == Attr::Size => Some(Value::Int(if pick.is_multiple_of(2) {
            n * 10
        } else {
            (n / 10).max(2)
        })),
        _ => {
            let w = world();
            let others: Vec<&Value> = pool
                .iter()
                .filter_map(|&i| w.entities[i].get(attr))
                .filter(|v| *v != truth && !same_key(v, truth))
                .collect();
            if others.is_empty() {
                return match truth {
                    Value::Int(n) | Value::Ordinal(n) => Some(Value::Int(n + 1)),
                    _ => None,
                };
            }
            Some(others[pick % others.len()].clone())
        }
    }
}

/// Whether an answer stating `a` could be told from one stating `b` (populations are
/// judged with a tolerance, so close ones count as the same).
pub fn distinct(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Millions(x)), Some(Value::Millions(y))) => (x - y).abs() > 0.35 * y.max(*x),
        (Some(x), Some(y)) => x != y && !same_key(x, y),
        _ => false,
    }
}

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Text { key: x, .. }, Value::Text { key: y, .. }) => x == y,
        _ => false,
    }
}

/// What a correct answer about `attr` of `e` must say, and what it must not.
pub fn expect(e: &Entity, attr: Attr, lang: Lang) -> Expect {
    let mut x = Expect::default();
    let Some(v) = e.get(attr) else { return x };
    match v {
        Value::Text { key, .. } => {
            let k = key[lang.idx()].clone();
            x.cased = attr == Attr::Symbol;
            let mut others: Vec<String> = world()
                .entities
                .iter()
                .filter_map(|o| match o.get(attr) {
                    Some(Value::Text { key, .. }) => Some(key[lang.idx()].clone()),
                    _ => None,
                })
                .filter(|o| {
                    // A wrong value that overlaps the right one or the entity's own name
                    // would flag correct answers; "I" would flag every English sentence.
                    !o.contains(&k)
                        && !k.contains(o.as_str())
                        && !name(e, lang).contains(o.as_str())
                        && o != "I"
                })
                .collect();
            others.sort();
            others.dedup();
            x.any_of = vec![k];
            x.none_of = others;
        }
        Value::Int(0) if attr == Attr::Moons => {
            x.any_of = match lang {
                Lang::En => vec!["no known moons".into(), "no moons".into()],
                Lang::Zh => vec!["没有已知的卫星".into(), "没有卫星".into()],
            };
            x.none_of = (1..10).map(|d| d.to_string()).collect();
        }
        Value::Int(n) | Value::Ordinal(n) => {
            x.number = Some(*n as f64);
            if attr == Attr::Size {
                x.any_of = vec![small(e, lang).to_string()];
            }
        }
        Value::Millions(m) => {
            x.number = Some(m * 1e6);
            x.tolerance = 0.15;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(n: &str) -> &'static Entity {
        let w = world();
        &w.entities[w.by_name(n).unwrap()]
    }

    #[test]
    fn answers_read_naturally_in_both_languages() {
        let fr = ent("France");
        assert_eq!(
            answer(fr, Attr::Capital, Lang::En),
            "The capital of France is Paris."
        );
        assert_eq!(answer(fr, Attr::Capital, Lang::Zh), "法国的首都是巴黎。");
        assert_eq!(
            answer(fr, Attr::Population, Lang::En),
            "France has about 68 million people."
        );
        assert_eq!(
            answer(fr, Attr::Population, Lang::Zh),
            "法国的人口约6800万。"
        );
        assert_eq!(
            answer(ent("China"), Attr::Population, Lang::Zh),
            "中国的人口约14.1亿。"
        );
        assert_eq!(
            answer(ent("iron"), Attr::Symbol, Lang::En),
            "The chemical symbol of iron is Fe."
        );
        assert_eq!(
            answer(ent("Mars"), Attr::Order, Lang::Zh),
            "火星是离太阳第四近的行星。"
        );
        assert_eq!(
            answer(ent("Venus"), Attr::Moons, Lang::En),
            "Venus has no known moons."
        );
        assert_eq!(
            answer(ent("hour"), Attr::Size, Lang::En),
            "There are 60 minutes in one hour."
        );
        assert_eq!(brief(ent("hour"), Attr::Size, Lang::Zh), "60分钟。");
        assert_eq!(brief(ent("Mars"), Attr::Order, Lang::En), "Fourth.");
    }

    #[test]
    fn expectations_exclude_the_truth() {
        let x = expect(ent("France"), Attr::Capital, Lang::En);
        assert_eq!(x.any_of, vec!["Paris"]);
        assert!(
            x.none_of.contains(&"Berlin".to_string()) && !x.none_of.contains(&"Paris".to_string())
        );
        let x = expect(ent("iron"), Attr::Symbol, Lang::En);
        assert!(x.cased && !x.none_of.contains(&"I".to_string()));
    }
}
