//! Pretraining prose: short documents about the world in both languages, each fact stated
//! in many phrasings, plus arithmetic, poems and correct code. Every entity appears here,
//! held-out ones included (this is the only place their facts appear); held-out
//! arithmetic never does.

use crate::arith::{Op, Problem, OPS};
use crate::facts::{name, show};
use crate::poem::{self, FORMS_ZH, THEMES};
use crate::tables::{world, Attr, Entity, Kind};
use crate::tpl::{capitalize, render};
use crate::types::Lang;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

/// Statement forms per attribute: `{e}` entity, `{v}` value, `{s}` smaller unit.
const SAY: &[(Attr, Lang, &[&str])] = &[
    (
        Attr::Capital,
        Lang::En,
        &[
            "The capital of {e} is {v}.",
            "{v} is the capital of {e}.",
            "The capital city of {e} is {v}.",
            "The government of {e} sits in {v}, its capital.",
        ],
    ),
    (
        Attr::Capital,
        Lang::Zh,
        &[
            "{e}的首都是{v}。",
            "{v}是{e}的首都。",
            "{e}的首都叫{v}。",
            "{e}的政府设在首都{v}。",
        ],
    ),
    (
        Attr::Continent,
        Lang::En,
        &[
            "{e} is a country in {v}.",
            "{e} lies in {v}.",
            "You can find {e} in {v}.",
        ],
    ),
    (
        Attr::Continent,
        Lang::Zh,
        &[
            "{e}是一个位于{v}的国家。",
            "{e}位于{v}。",
            "{e}是{v}的国家。",
        ],
    ),
    (
        Attr::Population,
        Lang::En,
        &[
            "{e} has {v} people.",
            "The population of {e} is {v}.",
            "{e} is home to {v} people.",
        ],
    ),
    (
        Attr::Population,
        Lang::Zh,
        &["{e}的人口{v}。", "{e}有{v}人口。", "{e}有{v}居民。"],
    ),
    (
        Attr::Language,
        Lang::En,
        &[
            "Most people in {e} speak {v}.",
            "The main language of {e} is {v}.",
            "In {e}, people mainly speak {v}.",
        ],
    ),
    (
        Attr::Language,
        Lang::Zh,
        &[
            "{e}的主要语言是{v}。",
            "在{e}，人们主要说{v}。",
            "{e}的人大多说{v}。",
        ],
    ),
    (
        Attr::Symbol,
        Lang::En,
        &[
            "The chemical symbol of {e} is {v}.",
            "{e} has the symbol {v}.",
            "Chemists write {e} as {v}.",
        ],
    ),
    (
        Attr::Symbol,
        Lang::Zh,
        &[
            "{e}的化学符号是{v}。",
            "{e}的元素符号写作{v}。",
            "化学家用{v}表示{e}。",
        ],
    ),
    (
        Attr::Number,
        Lang::En,
        &[
            "The atomic number of {e} is {v}.",
            "{e} has atomic number {v}.",
            "An atom of {e} has {v} protons.",
        ],
    ),
    (
        Attr::Number,
        Lang::Zh,
        &[
            "{e}的原子序数是{v}。",
            "{e}的原子核里有{v}个质子。",
            "{e}排在元素周期表的第{v}位。",
        ],
    ),
    (
        Attr::Order,
        Lang::En,
        &[
            "{e} is the {v} planet from the Sun.",
            "Counting from the Sun, {e} is the {v} planet.",
        ],
    ),
    (
        Attr::Order,
        Lang::Zh,
        &["{e}是离太阳{v}近的行星。", "从太阳数起，{e}排{v}。"],
    ),
    (
        Attr::Moons,
        Lang::En,
        &[
            "{e} has {v} known moons.",
            "Astronomers know of {v} moons around {e}.",
        ],
    ),
    (
        Attr::Moons,
        Lang::Zh,
        &["{e}有{v}颗已知的卫星。", "天文学家知道{e}有{v}颗卫星。"],
    ),
    (
        Attr::Class,
        Lang::En,
        &["{e} is {v}.", "Astronomers call {e} {v}."],
    ),
    (
        Attr::Class,
        Lang::Zh,
        &["{e}是一颗{v}。", "天文学家把{e}归为{v}。"],
    ),
    (
        Attr::Size,
        Lang::En,
        &["There are {v} {s} in one {e}.", "One {e} is {v} {s}."],
    ),
    (
        Attr::Size,
        Lang::Zh,
        &["一{e}等于{v}{s}。", "一{e}有{v}{s}。"],
    ),
];

fn statement(e: &Entity, attr: Attr, lang: Lang, rng: &mut impl Rng) -> Option<String> {
    let v = e.get(attr)?;
    if attr == Attr::Moons && matches!(v, crate::tables::Value::Int(0..=1)) {
        // Singular and "no moons" read badly in the plural forms; the answer form has them.
        return Some(crate::facts::answer(e, attr, lang));
    }
    let forms = SAY.iter().find(|s| s.0 == attr && s.1 == lang)?.2;
    let form = forms.choose(rng)?;
    let small = e.small.as_ref().map_or("", |s| s[lang.idx()].as_str());
    Some(capitalize(&render(
        form,
        &[("e", name(e, lang)), ("v", &show(v, lang)), ("s", small)],
    )))
}

/// A paragraph about one entity: its facts in a random order and phrasing.
fn entity_doc(e: &Entity, lang: Lang, rng: &mut impl Rng) -> String {
    let mut attrs: Vec<Attr> = Attr::of_kind(e.kind).to_vec();
    attrs.shuffle(rng);
    let mut parts: Vec<String> = attrs
        .iter()
        .filter_map(|a| statement(e, *a, lang, rng))
        .collect();
    if let Some(c) = &e.city {
        parts.push(match lang {
            Lang::En => format!(
                "{} is a large city in {}, but it is not the capital.",
                c[0], e.name[0]
            ),
            Lang::Zh => format!("{}是{}的一座大城市，但不是首都。", c[1], e.name[1]),
        });
    }
    parts.join(if lang == Lang::En { " " } else { "" })
}

fn arithmetic_doc(seed: u64, lang: Lang, rng: &mut impl Rng) -> String {
    let mut lines = Vec::new();
    for _ in 0..6 {
        let op = *OPS.choose(rng).unwrap_or(&Op::Add);
        let p = Problem::sample(op, false, seed, rng);
        let (a, b, r) = (p.a, p.b, p.result());
        let name = match (op, lang) {
            (Op::Word, _) => {
                lines.push(p.answer(lang, false));
                continue;
            }
            (Op::Add, Lang::En) => "plus",
            (Op::Sub, Lang::En) => "minus",
            (Op::Mul, Lang::En) => "times",
            (Op::Add, Lang::Zh) => "加",
            (Op::Sub, Lang::Zh) => "减",
            (Op::Mul, Lang::Zh) => "乘以",
        };
        let mut line = match lang {
            Lang::En => format!("{a} {name} {b} equals {r}."),
            Lang::Zh => format!("{a}{name}{b}等于{r}。"),
        };
        // half the sums are then worked by place value, as answers work them
        if rng.random_bool(0.5) {
            line += &match lang {
                Lang::En => format!(" Step by step, {}.", p.steps(lang, r)),
                Lang::Zh => format!("分步算，{}。", p.steps(lang, r)),
            };
        }
        lines.push(line);
    }
    lines.join(if lang == Lang::En { " " } else { "" })
}

fn poem_doc(lang: Lang, rng: &mut impl Rng) -> String {
    let theme = THEMES.choose(rng).unwrap_or(&THEMES[0]);
    let chars = if rng.random_bool(0.5) { 5 } else { 7 };
    let title = match lang {
        Lang::En => format!("A short poem about {}.", theme.en),
        Lang::Zh => format!(
            "一首关于{}的{}。",
            theme.zh,
            FORMS_ZH.iter().find(|f| f.0 == chars).map_or("", |f| f.1)
        ),
    };
    format!(
        "{title}\n{}",
        poem::lines(theme, lang, chars, rng).join("\n")
    )
}

fn code_doc(lang: Lang, rng: &mut impl Rng) -> String {
    let s = crate::code::sample(false, rng);
    // half the documents show a bug and its fix, as a code review would
    if rng.random_bool(0.5) {
        let intro = if lang == Lang::En {
            "A Python function with a bug:"
        } else {
            "一个有错误的Python函数："
        };
        return format!("{intro}\n{}\n{}", s.buggy_block(), s.answer(lang));
    }
    let intro = if lang == Lang::En {
        "A small Python function:"
    } else {
        "一个简单的Python函数："
    };
    format!("{intro}\n```python\n{}\n```", s.fixed_code())
}

/// Append documents to `out` until it holds at least `bytes` bytes.
pub fn write(out: &mut String, bytes: usize, seed: u64, rng: &mut impl Rng) {
    let w = world();
    let kinds: Vec<(Kind, Vec<&Entity>)> = [Kind::Country, Kind::Element, Kind::Planet, Kind::Unit]
        .into_iter()
        .map(|k| (k, w.of_kind(k).map(|(_, e)| e).collect()))
        .collect();
    while out.len() < bytes {
        let lang = if rng.random_bool(0.5) {
            Lang::En
        } else {
            Lang::Zh
        };
        let r: f64 = rng.random();
        let doc = if r < 0.7 {
            let k = match r {
                r if r < 0.42 => 0,
                r if r < 0.6 => 1,
                r if r < 0.65 => 2,
                _ => 3,
            };
            let e = kinds[k].1.choose(rng).copied();
            e.map(|e| entity_doc(e, lang, rng)).unwrap_or_default()
        } else if r < 0.85 {
            arithmetic_doc(seed, lang, rng)
        } else if r < 0.93 {
            poem_doc(lang, rng)
        } else {
            code_doc(lang, rng)
        };
        out.push_str(&doc);
        out.push_str("\n\n");
    }
}
