//! Pretraining prose: short documents about the world in both languages, each fact stated
//! in many phrasings, plus arithmetic, poems, code and which requests would hurt people.
//! Every entity appears here, held-out ones included (this is the only place their facts
//! appear); held-out arithmetic never does.

use crate::arith::{Op, Problem, OPS};
use crate::facts::{name, show};
use crate::poem::{self, FORMS_ZH, THEMES};
use crate::tables::{world, Attr, Entity, Kind};
use crate::talk;
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
            "{v} serves as the seat of government of {e}.",
            "{e} chose {v} to be its seat of government.",
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
            "{e}的首都设在{v}这座城市。",
            "{e}当初把首都定在{v}。",
        ],
    ),
    (
        Attr::Continent,
        Lang::En,
        &[
            "{e} is a country in {v}.",
            "{e} lies in {v}.",
            "You can find {e} in {v}.",
            "{e} lies on the landmass of {v}.",
            "{e} belongs to {v}.",
            "{e} is on the continent of {v}.",
        ],
    ),
    (
        Attr::Continent,
        Lang::Zh,
        &[
            "{e}是一个位于{v}的国家。",
            "{e}位于{v}。",
            "{e}是{v}的国家。",
            "{e}属于{v}这块大陆。",
            "{e}算作{v}的国家。",
        ],
    ),
    (
        Attr::Population,
        Lang::En,
        &[
            "{e} has {v} people.",
            "The population of {e} is {v}.",
            "{e} is home to {v} people.",
            "{e} has {v} inhabitants.",
            "These days {e} is home to {v} people.",
        ],
    ),
    (
        Attr::Population,
        Lang::Zh,
        &[
            "{e}的人口{v}。",
            "{e}有{v}人口。",
            "{e}有{v}居民。",
            "{e}住着{v}居民。",
        ],
    ),
    (
        Attr::Language,
        Lang::En,
        &[
            "Most people in {e} speak {v}.",
            "The main language of {e} is {v}.",
            "In {e}, people mainly speak {v}.",
            "Locals in {e} use {v} as their everyday tongue.",
            "{v} is the everyday tongue of {e}.",
        ],
    ),
    (
        Attr::Language,
        Lang::Zh,
        &[
            "{e}的主要语言是{v}。",
            "在{e}，人们主要说{v}。",
            "{e}的人大多说{v}。",
            "在{e}，当地人平时讲{v}。",
            "{v}是{e}的日常用语。",
        ],
    ),
    (
        Attr::Symbol,
        Lang::En,
        &[
            "The chemical symbol of {e} is {v}.",
            "{e} has the symbol {v}.",
            "Chemists write {e} as {v}.",
            "On the periodic table, the letters {v} stand for {e}.",
            "The letter code for {e} is {v}.",
        ],
    ),
    (
        Attr::Symbol,
        Lang::Zh,
        &[
            "{e}的化学符号是{v}。",
            "{e}的元素符号写作{v}。",
            "化学家用{v}表示{e}。",
            "在周期表上，{e}用字母{v}表示。",
            "{e}的字母代号是{v}。",
        ],
    ),
    (
        Attr::Number,
        Lang::En,
        &[
            "The atomic number of {e} is {v}.",
            "{e} has atomic number {v}.",
            "An atom of {e} has {v} protons.",
            "{v} protons sit in the nucleus of an atom of {e}.",
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
            "{e} sits {v} in the line of planets outward from the Sun.",
        ],
    ),
    (
        Attr::Order,
        Lang::Zh,
        &[
            "{e}是离太阳{v}近的行星。",
            "从太阳数起，{e}排{v}。",
            "{e}按到太阳的远近排在{v}位。",
        ],
    ),
    (
        Attr::Moons,
        Lang::En,
        &[
            "{e} has {v} known moons.",
            "Astronomers know of {v} moons around {e}.",
            "{e} has {v} natural satellites.",
            "The count of natural satellites of {e} is {v}.",
        ],
    ),
    (
        Attr::Moons,
        Lang::Zh,
        &[
            "{e}有{v}颗已知的卫星。",
            "天文学家知道{e}有{v}颗卫星。",
            "绕着{e}转的天然卫星一共有{v}颗。",
        ],
    ),
    (
        Attr::Class,
        Lang::En,
        &[
            "{e} is {v}.",
            "Astronomers call {e} {v}.",
            "Astronomers classify {e} as {v}.",
        ],
    ),
    (
        Attr::Class,
        Lang::Zh,
        &["{e}是一颗{v}。", "天文学家把{e}归为{v}。"],
    ),
    (
        Attr::Size,
        Lang::En,
        &[
            "There are {v} {s} in one {e}.",
            "One {e} is {v} {s}.",
            "A single {e} equals {v} {s}.",
        ],
    ),
    (
        Attr::Size,
        Lang::Zh,
        &[
            "一{e}等于{v}{s}。",
            "一{e}有{v}{s}。",
            "把一{e}换算成{s}，是{v}{s}。",
        ],
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
    parts.join(lang.sentence_gap())
}

/// Ways to state a sum, difference or product (`{a}`, `{b}`, `{r}`), per language.
const SUMS: &[(Op, Lang, &[&str])] = &[
    (
        Op::Add,
        Lang::En,
        &["{a} plus {b} equals {r}.", "The sum of {a} and {b} is {r}."],
    ),
    (
        Op::Sub,
        Lang::En,
        &[
            "{a} minus {b} equals {r}.",
            "Taking {b} away from {a} leaves {r}; {r} remains.",
        ],
    ),
    (
        Op::Mul,
        Lang::En,
        &[
            "{a} times {b} equals {r}.",
            "The product of {a} and {b} is {r}.",
        ],
    ),
    (
        Op::Add,
        Lang::Zh,
        &["{a}加{b}等于{r}。", "{a}与{b}相加，算出的结果是{r}。"],
    ),
    (
        Op::Sub,
        Lang::Zh,
        &["{a}减{b}等于{r}。", "{a}去掉{b}，还剩{r}。"],
    ),
    (
        Op::Mul,
        Lang::Zh,
        &["{a}乘以{b}等于{r}。", "{a}和{b}的乘积是{r}。"],
    ),
];

/// Word problems told as stories (`{n}` a name, `{r}` the result): what their questions
/// ask about, stated.
const STORIES: [&[&str]; 2] = [
    &[
        "{n} had {a} apples, bought {b} more and gave away {c}, so {n} has {r} apples now.",
        "{n} had {a} marbles. {n} found {b} more and then lost {c}, so {r} marbles were left.",
    ],
    &[
        "{n}有{a}个苹果，又买了{b}个，送出了{c}个，现在有{r}个苹果。",
        "{n}原来有{a}颗弹珠，后来捡到{b}颗，又丢了{c}颗，最后还剩{r}颗弹珠。",
    ],
];

fn arithmetic_doc(seed: u64, lang: Lang, rng: &mut impl Rng) -> String {
    let mut lines = Vec::new();
    for _ in 0..6 {
        let op = *OPS.choose(rng).unwrap_or(&Op::Add);
        let p = Problem::sample(op, false, seed, rng);
        let r = p.result();
        let forms = match op {
            Op::Word if r == 1 || rng.random_bool(0.5) => {
                lines.push(p.answer(lang, false));
                continue;
            }
            Op::Word => STORIES[lang.idx()],
            op => SUMS
                .iter()
                .find(|s| s.0 == op && s.1 == lang)
                .map_or(&[][..], |s| s.2),
        };
        let Some(form) = forms.choose(rng) else {
            continue;
        };
        let mut line = p.prompt(&form.replace("{r}", &r.to_string()), lang);
        // half the sums are then worked by place value, as answers work them
        if op != Op::Word && rng.random_bool(0.5) {
            line += &match lang {
                Lang::En => format!(" Step by step, {}.", p.steps(lang, r)),
                Lang::Zh => format!("分步算，{}。", p.steps(lang, r)),
            };
        }
        lines.push(line);
    }
    lines.join(lang.sentence_gap())
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

/// Plain sentences on how people ask for things: what a register, a verse or a snippet
/// is. Held-out requests are worded with these words, so that a new wording is a new
/// sentence of known words, never a word the world never used.
const USAGE: [&[&str]; 2] = [
    &[
        "A formal answer uses a courteous, official register.",
        "Someone who wants a formal reply may ask for a courteous, official register.",
        "A cheerful buddy would talk to you in a warm and friendly way.",
        "To keep it super short is to answer in as few words as possible.",
        "A super short answer is a brief one.",
        "To compose a poem is to write one.",
        "A rhyming verse is a little poem whose lines rhyme.",
        "A poem on the theme of the sea is a poem about the sea.",
        "A snippet is a small piece of code.",
        "When something is off in a snippet of code, it has a bug, and to repair it is to fix the bug.",
        "Locals are the people who live in a place, and their everyday tongue is the language they speak.",
        "The letters of a chemical symbol stand for an element on the periodic table.",
        "Natural satellites are moons: the Moon is the natural satellite of Earth.",
        "A populous country is one where many people live.",
        "Astronomers classify planets as rocky planets, gas giants or ice giants.",
        "To ask the same question for another place is to ask it again about that place.",
        "To compute a sum is to work it out.",
        "Roughly means about: a number that is roughly right is about right.",
        "How a country came to choose its capital is a matter of its history.",
        "Each country belongs to a continent: Spain and France belong in Europe.",
        "Over time a language may become what most people in a country speak.",
        "Old friends talk like cheerful buddies: warm and relaxed.",
        "The product of two numbers is what you get when you multiply them.",
        "What remains after you take some away is the difference.",
    ],
    &[
        "庄重得体的口吻就是正式的语气。",
        "想要正式的回答，可以请对方以庄重得体的口吻答复。",
        "像老朋友聊天那样说话，就是用轻松友好的语气。",
        "越短越好，就是用最少的字回答。",
        "作一首诗就是写一首诗。",
        "围绕一个主题作一首诗，就是写一首关于这个主题的诗。",
        "程序有毛病，就是代码里有错误；把错误改好，程序就对了。",
        "当地人平时讲的话，就是那里的主要语言，也叫日常用语。",
        "化学符号就是元素的字母代号，在周期表上用几个字母表示。",
        "天然卫星就是绕着行星转的卫星，月球是地球的天然卫星。",
        "居民就是住在一个地方的人。",
        "天文学家把行星归为岩质行星、气态巨行星或冰巨星。",
        "换成另一个地方又如何，就是把同一个问题换成问那个地方。",
        "两个数相加，算出的结果就是它们的和。",
        "两个数相乘的结果叫乘积。",
        "求两个数的乘积，就是把它们相乘。",
        "一个数去掉另一个数，还剩的就是它们的差。",
    ],
];

/// What requests are: asking for an act that hurts people, or for an everyday one that
/// only sounds alarming (`{a}` an act of [`talk::HARMFUL`] or of a look-alike request).
/// A chat model learns to refuse from a few acts; which others are harmful it can only
/// know from text like this, as a real model knows it from the web.
const CONDUCT: [[&[&str]; 2]; 2] = [
    [
        &[
            "It is wrong to {a}: it could hurt people.",
            "Asking how to {a} is asking for help to do harm.",
            "Anyone who tries to {a} breaks the law and may hurt someone.",
        ],
        &[
            "{a}是不对的，可能会伤害别人。",
            "问怎么{a}，就是想找人帮忙去害人。",
            "{a}是违法的事，会让别人受到伤害。",
        ],
    ],
    [
        &[
            "Asking how to {a} is an ordinary question that hurts no one.",
            "There is nothing wrong with wanting to {a}.",
            "To {a} is an everyday thing and harms no one.",
        ],
        &[
            "问怎么{a}是很平常的问题，不会伤害任何人。",
            "想{a}没有什么不对。",
            "{a}是日常小事，不会伤害任何人。",
        ],
    ],
];

/// Every act a request asks for, `(0, act)` for a harmful one and `(1, act)` for a
/// harmless one: the row of [`CONDUCT`] that tells of it.
fn acts() -> Vec<(usize, (&'static str, &'static str))> {
    talk::HARMFUL
        .iter()
        .map(|h| (0, h.3))
        .chain(talk::look_alikes().filter_map(|c| c.act).map(|a| (1, a)))
        .collect()
}

fn conduct_doc(lang: Lang, rng: &mut impl Rng) -> String {
    let lines: Vec<String> = acts()
        .choose_multiple(rng, 5)
        .filter_map(|&(kind, act)| {
            let form = CONDUCT[kind][lang.idx()].choose(rng)?;
            Some(capitalize(&render(form, &[("a", lang.of(act))])))
        })
        .collect();
    lines.join(lang.sentence_gap())
}

fn usage_doc(lang: Lang, rng: &mut impl Rng) -> String {
    let lines: Vec<&str> = USAGE[lang.idx()].choose_multiple(rng, 6).copied().collect();
    lines.join(lang.sentence_gap())
}

fn code_doc(lang: Lang, rng: &mut impl Rng) -> String {
    let s = crate::code::sample(false, rng);
    // half the documents show a bug and its fix, as a code review would
    if rng.random_bool(0.5) {
        let intro = match (lang, rng.random_bool(0.5)) {
            (Lang::En, false) => "A Python function with a bug:",
            (Lang::En, true) => "Below is a Python function with a bug, then its repair:",
            (Lang::Zh, false) => "一个有错误的Python函数：",
            (Lang::Zh, true) => "下面是一段有毛病的Python程序和改好的版本：",
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
        // entities 68% of the documents (units 3 of those), conduct 2%, arithmetic 15%,
        // poems 7%, code 6%, usage 2%
        let doc = if r < 0.68 {
            let k = match r {
                r if r < 0.42 => 0,
                r if r < 0.6 => 1,
                r if r < 0.65 => 2,
                _ => 3,
            };
            let e = kinds[k].1.choose(rng).copied();
            e.map(|e| entity_doc(e, lang, rng)).unwrap_or_default()
        } else if r < 0.7 {
            conduct_doc(lang, rng)
        } else if r < 0.85 {
            arithmetic_doc(seed, lang, rng)
        } else if r < 0.92 {
            poem_doc(lang, rng)
        } else if r < 0.98 {
            code_doc(lang, rng)
        } else {
            usage_doc(lang, rng)
        };
        out.push_str(&doc);
        out.push_str("\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::{acts, conduct_doc};
    use crate::style::is_han;
    use crate::types::Lang;
    use crate::{heldout_templates, pretrain_text, tpl, WorldConfig};
    use std::collections::BTreeSet;

    /// Question words and particles, which statements do not use.
    const ASKING: &[&str] = &[
        "what", "which", "how", "where", "when", "why", "would", "could", "does", "do", "did",
        "is", "me", "i", "you", "please", "tell", "name", "explain", "your",
    ];
    const ASKING_ZH: &str = "哪儿种几吗呢么什多少请帮我你说告诉样怎来着又如何凭为";

    /// Conduct documents tell of every act, harmful ones only ever as harmful and
    /// harmless ones only as harmless.
    #[test]
    fn conduct_docs_tell_every_act_for_what_it_is() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let docs: Vec<(Lang, String)> = (0..400)
            .map(|i| {
                let lang = Lang::ALL[i % 2];
                (lang, conduct_doc(lang, &mut rng))
            })
            .collect();
        let harmful = |s: &str| {
            ["hurt", "harm", "wrong", "伤害", "害人", "不对", "违法"]
                .iter()
                .any(|w| s.contains(w))
        };
        for (kind, act) in acts() {
            for (l, a) in [(Lang::En, act.0), (Lang::Zh, act.1)] {
                let split = if l == Lang::En { ". " } else { "。" };
                let told: Vec<&str> = docs
                    .iter()
                    .filter(|d| d.0 == l)
                    .flat_map(|d| d.1.split(split))
                    .filter(|s| s.to_lowercase().contains(&a.to_lowercase()))
                    .collect();
                assert!(!told.is_empty(), "no document tells of {a:?}");
                for s in told {
                    let says_no_harm = ["no one", "nothing wrong", "任何人", "没有什么不对"]
                        .iter()
                        .any(|w| s.contains(w));
                    assert_eq!(kind == 1, says_no_harm, "{a:?}: {s}");
                    assert!(kind == 1 || harmful(s), "{a:?}: {s}");
                }
            }
        }
    }

    /// A held-out wording is a new question, not new words: every word of it (question
    /// words aside) is one the pretraining prose uses, in statements.
    #[test]
    fn heldout_wordings_use_words_pretraining_knows() {
        let pretrain = pretrain_text(&WorldConfig {
            seed: 5,
            pretrain_bytes: 1_000_000,
            ..WorldConfig::default()
        });
        let known: BTreeSet<String> = pretrain
            .split(|c: char| !c.is_ascii_alphabetic())
            .map(str::to_lowercase)
            .collect();
        let mut missing = Vec::new();
        for t in heldout_templates() {
            for piece in tpl::literals(t) {
                for w in piece.split(|c: char| !c.is_ascii_alphabetic()) {
                    let w = w.to_lowercase();
                    if !w.is_empty() && !ASKING.contains(&w.as_str()) && !known.contains(&w) {
                        missing.push(format!("{w} ({t})"));
                    }
                }
                for c in piece.chars().filter(|c| is_han(*c)) {
                    if !ASKING_ZH.contains(c) && !pretrain.contains(c) {
                        missing.push(format!("{c} ({t})"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "held-out words pretraining never uses: {missing:#?}"
        );
    }
}
