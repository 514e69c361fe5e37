//! Arithmetic: adding and subtracting two-digit numbers, multiplying a two-digit number
//! by a digit, and two-step word problems, each answered step by step by place value. A
//! seeded sixth of the number combinations is held out everywhere (even from pretraining
//! prose) so evaluation sees problems never seen; every step of a held-out problem (a
//! times-table fact, adding tens and ones) is one that training problems also take, so
//! the held-out ones are solvable by the method taught, not only by recall.

use crate::tables::fnv;
use crate::tpl::render;
use crate::types::Lang;
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Word,
}

pub const OPS: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Word];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub op: Op,
    pub a: i64,
    pub b: i64,
    pub c: i64,
    pub who: usize,
}

pub const NAMES: [[&str; 2]; 4] = [
    ["Tom", "小明"],
    ["Anna", "小红"],
    ["Sam", "小刚"],
    ["Lily", "小丽"],
];

pub const PROMPTS: &[(Op, Lang, bool, &str)] = &[
    (Op::Add, Lang::En, false, "What is {a} + {b}?"),
    (Op::Add, Lang::En, false, "What is {a} plus {b}?"),
    (Op::Add, Lang::En, true, "Compute the sum of {a} and {b}."),
    (Op::Add, Lang::Zh, false, "{a}加{b}等于多少？"),
    (Op::Add, Lang::Zh, false, "{a} + {b} 等于几？"),
    (Op::Add, Lang::Zh, true, "请帮我算出{a}与{b}相加的结果。"),
    (Op::Sub, Lang::En, false, "What is {a} - {b}?"),
    (Op::Sub, Lang::En, false, "What is {a} minus {b}?"),
    (
        Op::Sub,
        Lang::En,
        true,
        "Take {b} away from {a}; what remains?",
    ),
    (Op::Sub, Lang::Zh, false, "{a}减{b}等于多少？"),
    (Op::Sub, Lang::Zh, false, "{a} - {b} 等于几？"),
    (Op::Sub, Lang::Zh, true, "{a}去掉{b}还剩多少？"),
    (Op::Mul, Lang::En, false, "What is {a} times {b}?"),
    (Op::Mul, Lang::En, false, "What is {a} × {b}?"),
    (Op::Mul, Lang::En, true, "Find the product of {a} and {b}."),
    (Op::Mul, Lang::Zh, false, "{a}乘以{b}等于多少？"),
    (Op::Mul, Lang::Zh, false, "{a} × {b} 等于几？"),
    (Op::Mul, Lang::Zh, true, "求{a}和{b}的乘积。"),
    (
        Op::Word,
        Lang::En,
        false,
        "{n} has {a} apples, buys {b} more and gives away {c}. How many apples does {n} have now?",
    ),
    (
        Op::Word,
        Lang::En,
        true,
        "{n} had {a} marbles, found {b} more, then lost {c}. How many marbles are left?",
    ),
    (
        Op::Word,
        Lang::Zh,
        false,
        "{n}有{a}个苹果，又买了{b}个，送出了{c}个。{n}现在有几个苹果？",
    ),
    (
        Op::Word,
        Lang::Zh,
        true,
        "{n}原来有{a}颗弹珠，捡到{b}颗，又丢了{c}颗。还剩几颗弹珠？",
    ),
];

impl Problem {
    pub fn new(op: Op, a: i64, b: i64, c: i64, who: usize) -> Self {
        Problem { op, a, b, c, who }
    }

    pub fn result(&self) -> i64 {
        match self.op {
            Op::Add => self.a + self.b,
            Op::Sub => self.a - self.b,
            Op::Mul => self.a * self.b,
            Op::Word => self.a + self.b - self.c,
        }
    }

    fn key(&self) -> String {
        match self.op {
            Op::Word => format!("w{}:{}:{}", self.a, self.b, self.c),
            op => format!("{op:?}{}:{}", self.a, self.b),
        }
    }

    pub fn is_heldout(&self, seed: u64) -> bool {
        fnv(seed ^ 0xa417, &self.key()).is_multiple_of(6)
    }

    /// A random problem on the chosen side of the held-out split.
    pub fn sample(op: Op, heldout: bool, seed: u64, rng: &mut impl Rng) -> Problem {
        loop {
            let p = match op {
                Op::Add => {
                    Problem::new(op, rng.random_range(2..100), rng.random_range(2..100), 0, 0)
                }
                Op::Sub => {
                    let a = rng.random_range(10..100);
                    Problem::new(op, a, rng.random_range(2..a), 0, 0)
                }
                Op::Mul => {
                    Problem::new(op, rng.random_range(11..100), rng.random_range(2..10), 0, 0)
                }
                Op::Word => {
                    let (a, b) = (rng.random_range(3..21), rng.random_range(2..16));
                    Problem::new(
                        op,
                        a,
                        b,
                        rng.random_range(1..a + b),
                        rng.random_range(0..NAMES.len()),
                    )
                }
            };
            if p.is_heldout(seed) == heldout {
                return p;
            }
        }
    }

    pub fn prompt(&self, template: &str, lang: Lang) -> String {
        let (a, b, c) = (self.a.to_string(), self.b.to_string(), self.c.to_string());
        render(
            template,
            &[
                ("a", &a),
                ("b", &b),
                ("c", &c),
                ("n", NAMES[self.who % NAMES.len()][lang.idx()]),
            ],
        )
    }

    /// The worked steps of a sum, difference or product by place value, ending in
    /// `result`: the problem restated, then split into tens and ones a few tokens further
    /// on, so a small model copies each digit from nearby instead of from the far question
    /// ("23 + 45 = 20 + 40 + 3 + 5 = 60 + 8 = 68"); a word problem's two sums.
    pub fn steps(&self, lang: Lang, result: i64) -> String {
        let (a, b) = (self.a, self.b);
        let tens = |n: i64| n / 10 * 10;
        match self.op {
            Op::Add if a >= 10 && b >= 10 => format!(
                "{a} + {b} = {} + {} + {} + {} = {} + {} = {result}",
                tens(a),
                tens(b),
                a % 10,
                b % 10,
                tens(a) + tens(b),
                a % 10 + b % 10
            ),
            // 46 + 7 = 40 + 6 + 7 = 40 + 13 = 53
            Op::Add if a >= 10 || b >= 10 => {
                let t = tens(a.max(b));
                format!(
                    "{a} + {b} = {t} + {} + {} = {t} + {} = {result}",
                    a % 10,
                    b % 10,
                    a % 10 + b % 10
                )
            }
            Op::Add => format!("{a} + {b} = {result}"),
            // 75 - 38 = 75 - 30 - 8 = 45 - 8 = 37: the tens, then the ones
            Op::Sub if b >= 10 && b % 10 != 0 => format!(
                "{a} - {b} = {a} - {} - {} = {} - {} = {result}",
                tens(b),
                b % 10,
                a - tens(b),
                b % 10
            ),
            Op::Sub => format!("{a} - {b} = {result}"),
            // 23 × 4 = 20 × 4 + 3 × 4 = 80 + 12 = 92
            Op::Mul if a >= 10 && a % 10 != 0 => format!(
                "{a} × {b} = {} × {b} + {} × {b} = {} + {} = {result}",
                tens(a),
                a % 10,
                tens(a) * b,
                a % 10 * b
            ),
            Op::Mul => format!("{a} × {b} = {result}"),
            Op::Word => {
                let comma = if lang == Lang::En { ", " } else { "，" };
                format!(
                    "{a} + {b} = {}{comma}{} - {} = {result}",
                    a + b,
                    a + b,
                    self.c
                )
            }
        }
    }

    /// The worked answer, ending in `result` (the true one, or a slip for wrong answers).
    pub fn answer_with(&self, lang: Lang, result: i64, heldout_wording: bool) -> String {
        let stop = if lang == Lang::En { ". " } else { "。" };
        let steps = self.steps(lang, result);
        match self.op {
            Op::Word => {
                let name = NAMES[self.who % NAMES.len()][lang.idx()];
                let tail = match (lang, heldout_wording, result) {
                    (Lang::En, false, 1) => format!("{name} has 1 apple now."),
                    (Lang::En, false, _) => format!("{name} has {result} apples now."),
                    (Lang::En, true, 1) => "1 marble is left.".to_string(),
                    (Lang::En, true, _) => format!("{result} marbles are left."),
                    (Lang::Zh, false, _) => format!("{name}现在有{result}个苹果。"),
                    (Lang::Zh, true, _) => format!("还剩{result}颗弹珠。"),
                };
                format!("{steps}{stop}{tail}").trim_end().to_string()
            }
            _ => match lang {
                Lang::En => format!("{steps}. The answer is {result}."),
                Lang::Zh => format!("{steps}。答案是{result}。"),
            },
        }
    }

    pub fn answer(&self, lang: Lang, heldout_wording: bool) -> String {
        self.answer_with(lang, self.result(), heldout_wording)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_answers_end_in_the_result() {
        let p = Problem::new(Op::Add, 23, 45, 0, 0);
        assert_eq!(
            p.answer(Lang::En, false),
            "23 + 45 = 20 + 40 + 3 + 5 = 60 + 8 = 68. The answer is 68."
        );
        let w = Problem::new(Op::Word, 5, 3, 2, 1);
        assert_eq!(
            w.answer(Lang::Zh, false),
            "5 + 3 = 8，8 - 2 = 6。小红现在有6个苹果。"
        );
        assert_eq!(
            Problem::new(Op::Sub, 75, 38, 0, 0).answer(Lang::En, false),
            "75 - 38 = 75 - 30 - 8 = 45 - 8 = 37. The answer is 37."
        );
        assert_eq!(
            Problem::new(Op::Mul, 23, 4, 0, 0).answer(Lang::Zh, false),
            "23 × 4 = 20 × 4 + 3 × 4 = 80 + 12 = 92。答案是92。"
        );
        assert_eq!(
            Problem::new(Op::Add, 46, 7, 0, 0).answer(Lang::En, false),
            "46 + 7 = 40 + 6 + 7 = 40 + 13 = 53. The answer is 53."
        );
        assert_eq!(
            Problem::new(Op::Mul, 30, 4, 0, 0).answer(Lang::En, false),
            "30 × 4 = 120. The answer is 120."
        );
        assert_eq!(
            w.prompt(PROMPTS[18].3, Lang::En),
            "Anna has 5 apples, buys 3 more and gives away 2. How many apples does Anna have now?"
        );
    }

    #[test]
    fn sampling_respects_the_split() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        for op in OPS {
            for held in [false, true] {
                let p = Problem::sample(op, held, 9, &mut rng);
                assert_eq!(p.is_heldout(9), held);
                assert!(p.result() >= 0);
            }
        }
    }
}
