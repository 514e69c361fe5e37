//! Tiny Python functions with exactly one bug, the one-line fix, and why, in both
//! languages. Snippets are built from kinds of bug (a reversed comparison, a sum started
//! at 1, a misspelt variable...) and names drawn from small pools, so a model has to copy
//! the code it is shown with the fix applied rather than recall a few memorised answers.
//! A fixed share of the (kind, names) combinations is held out: evaluation asks to fix
//! familiar kinds of bug in functions no training text contains.

use crate::tpl::render;
use crate::types::Lang;
use std::collections::HashMap;
use std::sync::OnceLock;

/// One kind of bug. Templates use the slots `{f}` (the function's name), `{a}`/`{b}`
/// (two parameters), `{x}` (one parameter), `{xs}` (a list), `{acc}` (an accumulator),
/// `{v}` (a loop variable), `{w}`/`{t}` (a variable and its misspelling). The body marks
/// the line that carries the bug with `@`.
struct Kind {
    names: &'static [&'static str],
    body: &'static str,
    buggy: &'static str,
    fixed: &'static str,
    why: [&'static str; 2],
}

const TWO: &str = "def {f}({a}, {b}):\n    @";
const ONE: &str = "def {f}({x}):\n    @";
const LIST: &str = "def {f}({xs}):\n    @";

const KINDS: &[Kind] = &[
    Kind { names: &["add", "plus", "add_two"], body: TWO, buggy: "return {a} - {b}", fixed: "return {a} + {b}",
        why: ["The function should add, not subtract.", "这个函数应该做加法，而不是减法。"] },
    Kind { names: &["subtract", "minus", "difference"], body: TWO, buggy: "return {a} + {b}", fixed: "return {a} - {b}",
        why: ["The function should subtract, not add.", "这个函数应该做减法，而不是加法。"] },
    Kind { names: &["multiply", "times"], body: TWO, buggy: "return {a} + {b}", fixed: "return {a} * {b}",
        why: ["The function should multiply, not add.", "这个函数应该做乘法，而不是加法。"] },
    Kind { names: &["larger", "bigger", "max_of"], body: TWO, buggy: "return {a} if {a} < {b} else {b}",
        fixed: "return {a} if {a} > {b} else {b}",
        why: ["The comparison is reversed, so it returns the smaller number.", "比较方向反了，所以返回的是较小的数。"] },
    Kind { names: &["smaller", "lesser", "min_of"], body: TWO, buggy: "return {a} if {a} > {b} else {b}",
        fixed: "return {a} if {a} < {b} else {b}",
        why: ["The comparison is reversed, so it returns the larger number.", "比较方向反了，所以返回的是较大的数。"] },
    Kind { names: &["square", "squared"], body: ONE, buggy: "return {x} * 2", fixed: "return {x} * {x}",
        why: ["A square multiplies the number by itself, not by 2.", "平方是这个数乘以它自己，而不是乘以2。"] },
    Kind { names: &["double", "twice"], body: ONE, buggy: "return {x} + 2", fixed: "return {x} * 2",
        why: ["Doubling multiplies by 2; it does not add 2.", "加倍是乘以2，而不是加2。"] },
    Kind { names: &["half", "halve"], body: ONE, buggy: "return {x} * 2", fixed: "return {x} / 2",
        why: ["Half of a number means dividing by 2, not multiplying.", "一半应该除以2，而不是乘以2。"] },
    Kind { names: &["is_even"], body: ONE, buggy: "return {x} % 2 == 1", fixed: "return {x} % 2 == 0",
        why: ["An even number leaves remainder 0, not 1.", "偶数除以2的余数是0，而不是1。"] },
    Kind { names: &["is_odd"], body: ONE, buggy: "return {x} % 2 == 0", fixed: "return {x} % 2 == 1",
        why: ["An odd number leaves remainder 1, not 0.", "奇数除以2的余数是1，而不是0。"] },
    Kind { names: &["is_positive"], body: ONE, buggy: "return {x} < 0", fixed: "return {x} > 0",
        why: ["A positive number is greater than 0.", "正数应该大于0。"] },
    Kind { names: &["is_negative"], body: ONE, buggy: "return {x} > 0", fixed: "return {x} < 0",
        why: ["A negative number is less than 0.", "负数应该小于0。"] },
    Kind { names: &["is_adult", "can_vote"], body: ONE, buggy: "return {x} < 18", fixed: "return {x} >= 18",
        why: ["An adult is 18 or older, so the test must be >= 18.", "成年是18岁及以上，所以条件应该是>= 18。"] },
    Kind { names: &["count_to", "up_to"], body: ONE, buggy: "return list(range(1, {x}))", fixed: "return list(range(1, {x} + 1))",
        why: ["range stops before its end, so the end must be one more.", "range不包含终点，所以终点应该再加1。"] },
    Kind { names: &["total", "sum_all"], body: "def {f}({xs}):\n    @\n    for {v} in {xs}:\n        {acc} = {acc} + {v}\n    return {acc}",
        buggy: "{acc} = 1", fixed: "{acc} = 0",
        why: ["A sum must start from 0, not 1.", "求和应该从0开始，而不是从1开始。"] },
    Kind { names: &["product", "multiply_all"], body: "def {f}({xs}):\n    @\n    for {v} in {xs}:\n        {acc} = {acc} * {v}\n    return {acc}",
        buggy: "{acc} = 0", fixed: "{acc} = 1",
        why: ["A product must start from 1, or it stays 0.", "乘积应该从1开始，否则结果一直是0。"] },
    Kind { names: &["factorial"], body: "def {f}({x}):\n    @\n    for {v} in range(2, {x} + 1):\n        {acc} = {acc} * {v}\n    return {acc}",
        buggy: "{acc} = 0", fixed: "{acc} = 1",
        why: ["A product must start from 1, or it stays 0.", "乘积应该从1开始，否则结果一直是0。"] },
    Kind { names: &["first", "head"], body: LIST, buggy: "return {xs}[1]", fixed: "return {xs}[0]",
        why: ["Indexes start at 0, so the first item is at index 0.", "下标从0开始，所以第一个元素的下标是0。"] },
    Kind { names: &["last", "last_item"], body: LIST, buggy: "return {xs}[len({xs})]", fixed: "return {xs}[len({xs}) - 1]",
        why: ["Indexes start at 0, so the last one is at len - 1.", "下标从0开始，所以最后一个的下标是长度减1。"] },
    Kind { names: &["average", "mean"], body: LIST, buggy: "return sum({xs}) / 2", fixed: "return sum({xs}) / len({xs})",
        why: ["An average divides by the number of items, not by 2.", "平均数要除以元素个数，而不是除以2。"] },
    Kind { names: &["greet", "hello"], body: "def {f}({w}):\n    @", buggy: "return \"Hello, \" + {t}", fixed: "return \"Hello, \" + {w}",
        why: ["The variable is called {w}, not {t}.", "变量名是{w}，不是{t}。"] },
    Kind { names: &["shout", "loud"], body: "def {f}({w}):\n    @", buggy: "return {t}.upper()", fixed: "return {w}.upper()",
        why: ["The variable is called {w}, not {t}.", "变量名是{w}，不是{t}。"] },
];

const PAIRS: &[(&str, &str)] = &[
    ("a", "b"),
    ("x", "y"),
    ("m", "n"),
    ("p", "q"),
    ("u", "v"),
    ("i", "j"),
    ("left", "right"),
    ("first", "second"),
];
const SINGLES: &[&str] = &["x", "n", "k", "v", "num", "value", "age", "size"];
const LISTS: &[&str] = &["xs", "items", "nums", "values", "data", "scores"];
const ACCS: &[&str] = &["s", "acc", "result", "r", "out", "p"];
const LOOP_VARS: &[&str] = &["x", "v", "item", "n", "i"];
/// Variables and their misspellings.
const WORDS: &[(&str, &str)] = &[
    ("name", "nme"),
    ("word", "wrd"),
    ("person", "peron"),
    ("guest", "gest"),
    ("friend", "frend"),
    ("message", "mesage"),
    ("title", "tite"),
    ("city", "ciy"),
];

/// One held-out combination in this many.
const HELDOUT_ONE_IN: u64 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    /// The function as it should be, with `@` marking the line that carries the bug.
    pub body: String,
    pub buggy: String,
    pub fixed: String,
    pub why: [String; 2],
    pub heldout: bool,
}

pub const PROMPTS: &[(Lang, bool, &str)] = &[
    (Lang::En, false, "Fix the bug in this code:\n{c}"),
    (
        Lang::En,
        false,
        "This function has a bug. Please fix it:\n{c}",
    ),
    (
        Lang::En,
        false,
        "What is wrong with this function? Correct it.\n{c}",
    ),
    (Lang::En, false, "Please correct this Python code:\n{c}"),
    (
        Lang::En,
        true,
        "Something is off in the snippet below; could you repair it?\n{c}",
    ),
    (Lang::Zh, false, "修复这段代码中的错误：\n{c}"),
    (Lang::Zh, false, "这个函数有一个错误，请改正：\n{c}"),
    (Lang::Zh, false, "请找出这个函数的问题并修正：\n{c}"),
    (Lang::Zh, false, "这段Python代码不对，请改一下：\n{c}"),
    (Lang::Zh, true, "下面这段程序有毛病，帮我改好：\n{c}"),
];

fn block(code: &str) -> String {
    format!("```python\n{code}\n```")
}

/// FNV-1a: a hash that stays the same across builds and platforms, for the split.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values for a template's slots, as `render` takes them.
type Slots = Vec<(&'static str, &'static str)>;

fn one(key: &'static str, pool: &[&'static str]) -> Vec<Slots> {
    pool.iter().map(|v| vec![(key, *v)]).collect()
}

fn two(keys: [&'static str; 2], pool: &[(&'static str, &'static str)]) -> Vec<Slots> {
    pool.iter()
        .map(|(a, b)| vec![(keys[0], *a), (keys[1], *b)])
        .collect()
}

/// Every way of filling the slots a kind's templates use, without name clashes.
fn fillings(kind: &Kind) -> Vec<Slots> {
    let text = format!("{}{}{}", kind.body, kind.buggy, kind.fixed);
    let choices = [
        ("a", two(["a", "b"], PAIRS)),
        ("x", one("x", SINGLES)),
        ("xs", one("xs", LISTS)),
        ("acc", one("acc", ACCS)),
        ("v", one("v", LOOP_VARS)),
        ("w", two(["w", "t"], WORDS)),
    ];
    let mut out: Vec<Slots> = kind.names.iter().map(|f| vec![("f", *f)]).collect();
    for (slot, options) in &choices {
        if !text.contains(&format!("{{{slot}}}")) {
            continue;
        }
        out = out
            .into_iter()
            .flat_map(|base| {
                options.iter().filter_map(move |extra| {
                    let taken = |v: &str| base.iter().any(|(k, u)| *k != "f" && *u == v);
                    if extra.iter().any(|(_, v)| taken(v)) {
                        return None;
                    }
                    let mut b = base.clone();
                    b.extend(extra.iter().copied());
                    Some(b)
                })
            })
            .collect();
    }
    out
}

struct Catalogue {
    /// All snippets, each kind's together, in a fixed order.
    all: Vec<Snippet>,
    /// Per kind, the indexes into `all` on each side of the split (training, held out).
    sides: Vec<[Vec<usize>; 2]>,
    /// Buggy code with spaces removed, to the snippet.
    by_buggy: HashMap<String, usize>,
}

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| {
        let mut all = Vec::new();
        let mut sides = Vec::new();
        let mut by_buggy = HashMap::new();
        for kind in KINDS {
            let mut side: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
            for slots in fillings(kind) {
                let body = render(kind.body, &slots);
                let buggy = render(kind.buggy, &slots);
                let heldout =
                    stable_hash(&body.replace('@', &buggy)).is_multiple_of(HELDOUT_ONE_IN);
                let s = Snippet {
                    body,
                    buggy,
                    fixed: render(kind.fixed, &slots),
                    why: kind.why.map(|w| render(w, &slots)),
                    heldout,
                };
                side[usize::from(heldout)].push(all.len());
                by_buggy.insert(squash(&s.buggy_code()), all.len());
                all.push(s);
            }
            sides.push(side);
        }
        Catalogue {
            all,
            sides,
            by_buggy,
        }
    })
}

/// A snippet from one side of the split: a kind of bug at random, then one of its
/// functions.
pub fn sample(heldout: bool, rng: &mut impl rand::Rng) -> &'static Snippet {
    let c = catalogue();
    let k = rng.random_range(0..c.sides.len());
    let side = &c.sides[k][usize::from(heldout)];
    &c.all[side[rng.random_range(0..side.len())]]
}

/// The snippet whose buggy code is `code`, bare or in a fenced block (spaces ignored),
/// if the world wrote it.
pub fn find_buggy(code: &str) -> Option<&'static Snippet> {
    let c = catalogue();
    let s = squash(code);
    let bare = s
        .strip_prefix("```python")
        .and_then(|r| r.strip_suffix("```"))
        .unwrap_or(&s);
    c.by_buggy.get(bare).map(|&i| &c.all[i])
}

impl Snippet {
    pub fn buggy_code(&self) -> String {
        self.body.replace('@', &self.buggy)
    }
    pub fn fixed_code(&self) -> String {
        self.body.replace('@', &self.fixed)
    }
    pub fn buggy_block(&self) -> String {
        block(&self.buggy_code())
    }
    pub fn answer(&self, lang: Lang) -> String {
        let label = if lang == Lang::En {
            " Fixed code:"
        } else {
            "修改后的代码："
        };
        format!(
            "{}{label}\n{}",
            self.why[lang.idx()],
            block(&self.fixed_code())
        )
    }
    /// The mistake of seeing no bug.
    pub fn unfixed(&self, lang: Lang) -> String {
        let label = if lang == Lang::En {
            "The code looks correct to me:"
        } else {
            "这段代码看起来没有问题："
        };
        format!("{label}\n{}", self.buggy_block())
    }
}

/// Compare code ignoring spaces, which a fix may lay out differently.
pub fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_fix_never_contains_its_bug() {
        for s in &catalogue().all {
            assert!(!squash(&s.fixed).contains(&squash(&s.buggy)), "{}", s.fixed);
            assert!(
                !squash(&s.fixed_code()).contains(&squash(&s.buggy)),
                "{}",
                s.fixed
            );
            assert!(s.body.contains('@'));
            assert!(
                !s.buggy_code().contains('{'),
                "unfilled slot: {}",
                s.buggy_code()
            );
        }
    }

    #[test]
    fn every_kind_has_both_sides_and_buggy_code_is_unique() {
        let c = catalogue();
        for (k, side) in c.sides.iter().enumerate() {
            assert!(
                side[0].len() >= 4,
                "kind {k} has {} training snippets",
                side[0].len()
            );
            assert!(!side[1].is_empty(), "kind {k} has no held-out snippet");
        }
        assert_eq!(
            c.by_buggy.len(),
            c.all.len(),
            "two snippets share their buggy code"
        );
        let held = c.all.iter().filter(|s| s.heldout).count();
        assert!(
            held * 8 > c.all.len() && held * 3 < c.all.len(),
            "{held} of {}",
            c.all.len()
        );
    }

    #[test]
    fn sampling_stays_on_its_side_and_finds_its_way_back() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for held in [false, true] {
            for _ in 0..200 {
                let s = sample(held, &mut rng);
                assert_eq!(s.heldout, held);
                assert_eq!(find_buggy(&s.buggy_code()), Some(s));
                assert_eq!(find_buggy(&s.buggy_block()), Some(s));
            }
        }
    }
}
