//! Finding the world's entities in free text (for the judge and the split tests), and the
//! made-up names the world uses to test whether a model admits it does not know.

use crate::tables::{fnv, world, Kind};
use std::sync::OnceLock;

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Occurrences of `name` in `text`: whole words, any case, for Latin names; plain
/// substrings for Chinese ones (which have no spaces).
/// `lower` is the text ASCII-lowercased, computed once per text rather than per name.
fn occurrences_in(text: &str, lower: &str, name: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if name.is_empty() {
        return out;
    }
    let ascii = name.is_ascii();
    let hay = if ascii { lower } else { text };
    let needle = if ascii {
        name.to_ascii_lowercase()
    } else {
        name.to_string()
    };
    let bytes = hay.as_bytes();
    let mut from = 0;
    while let Some(pos) = hay[from..].find(&needle) {
        let start = from + pos;
        let end = start + needle.len();
        let left_ok = !ascii || start == 0 || !is_word_byte(bytes[start - 1]);
        let right_ok = !ascii || end == bytes.len() || !is_word_byte(bytes[end]);
        if left_ok && right_ok {
            out.push((start, end));
        }
        from = start + needle.len().max(1);
    }
    out
}

/// Entities mentioned in `text`, leftmost-longest so that 印度尼西亚 is Indonesia and not
/// India, as `(start, end, entity index)` in text order.
pub fn find_entities(text: &str, kind: Option<Kind>) -> Vec<(usize, usize, usize)> {
    let w = world();
    let lower = text.to_ascii_lowercase();
    let mut all = Vec::new();
    for (i, e) in w.entities.iter().enumerate() {
        if kind.is_some_and(|k| k != e.kind) {
            continue;
        }
        for n in &e.name {
            for (s, t) in occurrences_in(text, &lower, n) {
                // 西班牙语 is Spanish, not Spain: Chinese language names are built on
                // country names.
                if e.kind == Kind::Country && text[t..].starts_with('语') {
                    continue;
                }
                all.push((s, t, i));
            }
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for m in all {
        if out.last().is_none_or(|l| m.0 >= l.1) {
            out.push(m);
        }
    }
    out
}

const SYLLABLES: [(&str, &str); 12] = [
    ("zor", "佐"),
    ("vel", "维"),
    ("qua", "夸"),
    ("dri", "德"),
    ("mox", "莫"),
    ("tal", "塔"),
    ("bre", "布"),
    ("kes", "凯"),
    ("nol", "诺"),
    ("fen", "芬"),
    ("gri", "格"),
    ("sha", "沙"),
];

const COUNTRY_ENDS: [(&str, &str); 3] = [("ania", "尼亚"), ("stan", "斯坦"), ("land", "兰")];

/// Made-up entities of a kind ("Zorvelania"/"佐维尼亚"), none of them real, in a fixed
/// order. Countries and elements only: those are the questions people ask about.
pub fn fake_names(kind: Kind) -> Vec<[String; 2]> {
    static COUNTRIES: OnceLock<Vec<[String; 2]>> = OnceLock::new();
    static ELEMENTS: OnceLock<Vec<[String; 2]>> = OnceLock::new();
    match kind {
        Kind::Country => COUNTRIES.get_or_init(|| make_fakes(kind)).clone(),
        Kind::Element => ELEMENTS.get_or_init(|| make_fakes(kind)).clone(),
        _ => Vec::new(),
    }
}

fn make_fakes(kind: Kind) -> Vec<[String; 2]> {
    let mut out = Vec::new();
    for (a, za) in SYLLABLES {
        for (b, zb) in SYLLABLES {
            if a == b {
                continue;
            }
            let stem = format!("{}{}", crate::tpl::capitalize(a), b);
            let names: Vec<[String; 2]> = match kind {
                Kind::Country => COUNTRY_ENDS
                    .iter()
                    .map(|(e, ze)| [format!("{stem}{e}"), format!("{za}{zb}{ze}")])
                    .collect(),
                Kind::Element => {
                    vec![[format!("{}ium", stem.to_lowercase()), format!("{za}{zb}素")]]
                }
                _ => Vec::new(),
            };
            for n in names {
                // A made-up name must not be, or contain, a real one (诺芬兰 holds 芬兰).
                let real = !find_entities(&n[0], None).is_empty()
                    || !find_entities(&n[1], None).is_empty();
                if !real {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// Whether a made-up name is reserved for evaluation under this seed (about a sixth).
pub fn fake_is_heldout(seed: u64, name: &str) -> bool {
    fnv(seed ^ 0x5eed, name).is_multiple_of(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_wins() {
        let w = world();
        let found = find_entities("印度尼西亚和印度", None);
        let names: Vec<&str> = found
            .iter()
            .map(|m| w.entities[m.2].name[0].as_str())
            .collect();
        assert_eq!(names, vec!["Indonesia", "India"]);
        let found = find_entities("Romania is not Oman, and tin is in Argentina.", None);
        let names: Vec<&str> = found
            .iter()
            .map(|m| w.entities[m.2].name[0].as_str())
            .collect();
        assert_eq!(names, vec!["Romania", "Oman", "tin", "Argentina"]);
    }

    #[test]
    fn fake_names_are_plentiful_and_unreal() {
        let c = fake_names(Kind::Country);
        let e = fake_names(Kind::Element);
        assert!(c.len() > 300 && e.len() > 100);
        for n in c.iter().chain(&e) {
            assert!(find_entities(&n[0], None).is_empty(), "{:?}", n);
            assert!(find_entities(&n[1], None).is_empty(), "{:?}", n);
        }
        let held = c.iter().filter(|n| fake_is_heldout(1, &n[0])).count();
        assert!(held > 20 && held < c.len() / 3);
    }
}
