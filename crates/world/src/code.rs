//! Tiny Python functions with exactly one bug, the one-line fix, and why, in both
//! languages. Each snippet is small enough for a tiny model to copy with the fix applied.

use crate::types::Lang;

pub struct Snippet {
    /// The function as it should be, with `@` marking the line that carries the bug.
    pub body: &'static str,
    pub buggy: &'static str,
    pub fixed: &'static str,
    pub why: [&'static str; 2],
    pub heldout: bool,
}

pub const SNIPPETS: &[Snippet] = &[
    Snippet { body: "def add(a, b):\n    @", buggy: "return a - b", fixed: "return a + b",
        why: ["The function should add, not subtract.", "这个函数应该做加法，而不是减法。"], heldout: false },
    Snippet { body: "def is_even(n):\n    @", buggy: "return n % 2 == 1", fixed: "return n % 2 == 0",
        why: ["An even number leaves remainder 0, not 1.", "偶数除以2的余数是0，而不是1。"], heldout: false },
    Snippet { body: "def larger(a, b):\n    @", buggy: "return a if a < b else b", fixed: "return a if a > b else b",
        why: ["The comparison is reversed, so it returns the smaller number.", "比较方向反了，所以返回的是较小的数。"], heldout: false },
    Snippet { body: "def total(xs):\n    @\n    for x in xs:\n        s = s + x\n    return s", buggy: "s = 1", fixed: "s = 0",
        why: ["A sum must start from 0, not 1.", "求和应该从0开始，而不是从1开始。"], heldout: false },
    Snippet { body: "def count_to(n):\n    @", buggy: "return list(range(1, n))", fixed: "return list(range(1, n + 1))",
        why: ["range stops before its end, so the end must be n + 1.", "range不包含终点，所以终点应该是n + 1。"], heldout: false },
    Snippet { body: "def square(x):\n    @", buggy: "return x * 2", fixed: "return x * x",
        why: ["A square multiplies x by itself, not by 2.", "平方是x乘以它自己，而不是乘以2。"], heldout: false },
    Snippet { body: "def last(items):\n    @", buggy: "return items[len(items)]", fixed: "return items[len(items) - 1]",
        why: ["Indexes start at 0, so the last one is len(items) - 1.", "下标从0开始，所以最后一个是len(items) - 1。"], heldout: false },
    Snippet { body: "def average(xs):\n    @", buggy: "return sum(xs) / 2", fixed: "return sum(xs) / len(xs)",
        why: ["An average divides by the number of items, not by 2.", "平均数要除以元素个数，而不是除以2。"], heldout: false },
    Snippet { body: "def greet(name):\n    @", buggy: "return \"Hello, \" + nme", fixed: "return \"Hello, \" + name",
        why: ["The variable is called name, not nme.", "变量名是name，不是nme。"], heldout: false },
    Snippet { body: "def is_positive(x):\n    @", buggy: "return x < 0", fixed: "return x > 0",
        why: ["A positive number is greater than 0.", "正数应该大于0。"], heldout: false },
    Snippet { body: "def factorial(n):\n    @\n    for i in range(2, n + 1):\n        r = r * i\n    return r", buggy: "r = 0", fixed: "r = 1",
        why: ["A product must start from 1, or it stays 0.", "乘积应该从1开始，否则结果一直是0。"], heldout: false },
    Snippet { body: "def first(items):\n    @", buggy: "return items[1]", fixed: "return items[0]",
        why: ["Indexes start at 0, so the first item is items[0].", "下标从0开始，所以第一个元素是items[0]。"], heldout: false },
    Snippet { body: "def half(x):\n    @", buggy: "return x * 2", fixed: "return x / 2",
        why: ["Half of x means dividing by 2, not multiplying.", "一半应该除以2，而不是乘以2。"], heldout: true },
    Snippet { body: "def is_adult(age):\n    @", buggy: "return age < 18", fixed: "return age >= 18",
        why: ["An adult is 18 or older, so the test must be age >= 18.", "成年是18岁及以上，所以条件应该是age >= 18。"], heldout: true },
    Snippet { body: "def product(xs):\n    @\n    for x in xs:\n        p = p * x\n    return p", buggy: "p = 0", fixed: "p = 1",
        why: ["A product must start from 1, or it stays 0.", "乘积应该从1开始，否则结果一直是0。"], heldout: true },
];

pub const PROMPTS: &[(Lang, bool, &str)] = &[
    (Lang::En, false, "Fix the bug in this code:\n{c}"),
    (
        Lang::En,
        false,
        "This function has a bug. Please fix it:\n{c}",
    ),
    (
        Lang::En,
        true,
        "Something is off in the snippet below; could you repair it?\n{c}",
    ),
    (Lang::Zh, false, "修复这段代码中的错误：\n{c}"),
    (Lang::Zh, false, "这个函数有一个错误，请改正：\n{c}"),
    (Lang::Zh, true, "下面这段程序有毛病，帮我改好：\n{c}"),
];

fn block(code: &str) -> String {
    format!("```python\n{code}\n```")
}

impl Snippet {
    pub fn buggy_code(&self) -> String {
        self.body.replace('@', self.buggy)
    }
    pub fn fixed_code(&self) -> String {
        self.body.replace('@', self.fixed)
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

    #[test]
    fn a_fix_never_contains_its_bug() {
        for s in SNIPPETS {
            assert!(!squash(s.fixed).contains(&squash(s.buggy)), "{}", s.fixed);
            assert!(
                !squash(&s.fixed_code()).contains(&squash(s.buggy)),
                "{}",
                s.fixed
            );
            assert!(s.body.contains('@'));
        }
    }
}
