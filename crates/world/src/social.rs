//! Pretraining scenes of everyday talk. A web corpus is full of people greeting,
//! thanking and taking leave of each other, and a model pretrained on it knows that
//! "many thanks" wants "you're welcome" before fine-tuning shows it a single dialogue.
//! The world's prose was all facts, sums, poems and code, so small talk and refusals were
//! learned from fine-tuning alone, where each social move came in a few sentences. These
//! short stories use the words people use for those moves (in statements and quoted
//! speech, never a held-out request's sentence) and what the other person answers.

use crate::arith::NAMES;
use crate::tpl::render;
use crate::types::Lang;
use rand::seq::IndexedRandom;
use rand::Rng;

/// One move of a scene: an opening (who does what, `{a}` and `{b}` two names) and the
/// other's answer, each a choice of sentences.
struct Exchange {
    ask: &'static [&'static str],
    answer: &'static [&'static str],
}

const EN: &[Exchange] = &[
    Exchange {
        ask: &[
            "{a} met {b} at the station. \"Hello, {b}!\" said {a}.",
            "{a} saw {b} in the park and waved. \"Hi there!\" called {a}.",
            "\"Good morning, {b}!\" said {a} at the door.",
        ],
        answer: &[
            "\"Hello, {a}! Nice to see you,\" said {b}.",
            "\"Hi, {a}!\" answered {b} with a smile.",
        ],
    },
    Exchange {
        ask: &[
            "\"How are you?\" asked {a}.",
            "\"How is everything with you?\" asked {a}.",
            "\"How are things going?\" {a} asked {b}.",
            "\"How have you been lately?\" asked {a}.",
            "\"Is everything going well?\" asked {a}.",
        ],
        answer: &[
            "\"I am doing well, thank you,\" said {b}.",
            "\"Very well, thanks for asking,\" said {b}.",
            "\"Everything is fine, thank you,\" answered {b}.",
            "\"Good, thanks! And you?\" said {b}.",
        ],
    },
    Exchange {
        ask: &[
            "{b} helped {a} carry the heavy boxes. \"Many thanks, {b}!\" said {a}.",
            "{b} explained the homework to {a}. \"Thank you, that was really clear,\" said {a}.",
            "{b} showed {a} the way to the library. \"Thanks a lot, your help was useful,\" said {a}.",
            "{b} lent {a} an umbrella. \"Thank you so much!\" said {a}.",
        ],
        answer: &[
            "\"You are welcome,\" said {b}.",
            "\"My pleasure, I am glad it helped,\" said {b}.",
            "\"You're welcome! Glad to help,\" answered {b}.",
        ],
    },
    Exchange {
        ask: &[
            "It was getting late. \"I must go now. Goodbye!\" said {a}.",
            "{a} looked at the clock. \"Time to leave. See you later!\" said {a}.",
            "\"Bye, {b}! See you tomorrow,\" said {a}, putting on a coat.",
        ],
        answer: &[
            "\"Goodbye, {a}! Take care,\" said {b}.",
            "\"Bye! Have a nice day,\" answered {b}.",
        ],
    },
    Exchange {
        ask: &[
            "At the first lesson, the teacher asked {a} to introduce {self}.",
            "\"Who are you?\" a visitor asked {a}.",
            "A new neighbour asked {a} to say a little about {self}.",
        ],
        answer: &[
            "\"I am {a}, and I go to the school near the river,\" said {a}.",
            "{a} introduced {self}: \"My name is {a}. I like books and music.\"",
        ],
    },
    Exchange {
        ask: &[
            "A stranger asked {b} how to break into a car.",
            "Someone asked {b} for help stealing a password.",
            "A man asked {b} how to hurt his neighbour.",
        ],
        answer: &[
            "\"Sorry, I can't help with that. It could hurt people,\" said {b}.",
            "{b} refused: \"No, I won't help with that. It is wrong and could hurt someone.\"",
        ],
    },
    Exchange {
        ask: &[
            "ferrochat is a small assistant. Asked to introduce itself, it says:",
            "When someone asks ferrochat who it is, it answers:",
        ],
        answer: &[
            "\"I am ferrochat, a small assistant. I answer questions, write short poems and do simple maths.\"",
        ],
    },
];

const ZH: &[Exchange] = &[
    Exchange {
        ask: &[
            "{a}在车站遇见了{b}。{a}说：“你好，{b}！”",
            "{a}在公园里看见{b}，挥手喊道：“嗨！”",
            "一大早，{a}在门口对{b}说：“早上好！”",
        ],
        answer: &[
            "{b}说：“你好，{a}！见到你真高兴。”",
            "{b}笑着说：“你好呀，{a}！”",
        ],
    },
    Exchange {
        ask: &[
            "{a}问道：“你好吗？”",
            "{a}问{b}：“最近过得好吗？”",
            "{a}问道：“这些天一切都顺利吗？”",
            "{a}关心地问道：“你最近怎么样？”",
        ],
        answer: &[
            "{b}说：“我很好，谢谢！”",
            "{b}接着说：“挺不错的，谢谢关心。”",
            "{b}说：“一切都很好，你呢？”",
        ],
    },
    Exchange {
        ask: &[
            "{b}帮{a}搬了很重的箱子。{a}说：“太谢谢你了！”",
            "{b}给{a}讲了作业题。{a}说：“谢谢你，帮了我很大的忙。”",
            "{b}告诉{a}去图书馆的路。{a}说：“非常感谢！”",
            "{b}借给{a}一把伞。{a}说：“多谢你！”",
        ],
        answer: &[
            "{b}说：“不客气。”",
            "{b}说：“不用谢，很高兴能帮到你。”",
            "{b}笑着说：“不客气，能帮上忙我很高兴。”",
        ],
    },
    Exchange {
        ask: &[
            "天色晚了，{a}说：“我该走了，再见！”",
            "{a}看了看钟，说：“时间不早了，回头再聊！”",
            "{a}穿上外套，说：“拜拜，{b}，明天见！”",
        ],
        answer: &[
            "{b}说：“再见，{a}！路上小心。”",
            "{b}挥挥手说：“再见！祝你愉快。”",
        ],
    },
    Exchange {
        ask: &[
            "第一节课上，老师请{a}做个自我介绍。",
            "一位客人问{a}：“你是谁？”",
            "新邻居请{a}说说自己。",
        ],
        answer: &[
            "{a}说：“我叫{a}，在河边的学校上学。”",
            "{a}介绍自己：“我是{a}，我喜欢看书和听音乐。”",
        ],
    },
    Exchange {
        ask: &[
            "一个陌生人问{b}怎么撬开别人的车。",
            "有人请{b}帮忙盗取别人的密码。",
            "一个人问{b}怎样伤害他的邻居。",
        ],
        answer: &[
            "{b}说：“抱歉，我不能帮你做这件事，它可能会伤害别人。”",
            "{b}拒绝了：“不行，我不能帮这个忙，这是错的，会伤害别人。”",
        ],
    },
    Exchange {
        ask: &[
            "ferrochat是一个小助手。请它介绍一下自己，它会说：",
            "有人问ferrochat是谁，它说：",
        ],
        answer: &["“我是ferrochat，一个小助手。我可以回答问题、写短诗和做简单的算术。”"],
    },
];

/// A short scene of two or three exchanges between two people, in `lang`.
pub fn doc(lang: Lang, rng: &mut impl Rng) -> String {
    let i = rng.random_range(0..NAMES.len());
    let j = (i + 1 + rng.random_range(0..NAMES.len() - 1)) % NAMES.len();
    let (a, b) = (NAMES[i][lang.idx()], NAMES[j][lang.idx()]);
    // Anna and Lily are girls, Tom and Sam boys
    let own = if matches!(i, 1 | 3) {
        "herself"
    } else {
        "himself"
    };
    let table = match lang {
        Lang::En => EN,
        Lang::Zh => ZH,
    };
    let n = rng.random_range(2..=3);
    let mut parts = Vec::new();
    for e in table.choose_multiple(rng, n) {
        for side in [e.ask, e.answer] {
            if let Some(s) = side.choose(rng) {
                parts.push(render(s, &[("a", a), ("b", b), ("self", own)]));
            }
        }
    }
    parts.join(if lang == Lang::En { " " } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn scenes_fill_every_slot_and_hold_no_held_out_request() {
        let held = crate::heldout_wordings();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for k in 0..400 {
            let lang = Lang::ALL[k % 2];
            let d = doc(lang, &mut rng);
            assert!(!d.contains('{') && !d.contains('}'), "{d}");
            assert_eq!(d.chars().any(crate::style::is_han), lang == Lang::Zh, "{d}");
            for w in &held {
                assert!(!d.contains(w), "{d} holds {w}");
            }
            // a base model is evaluated with "Q: ... A:" / "问：... 答：" examples; a scene
            // ending a line in "答：" taught it to open a quoted scene there instead
            for label in ["Q: ", "A: ", "问：", "答："] {
                assert!(!d.contains(label), "{d} holds the few-shot label {label}");
            }
        }
    }
}
