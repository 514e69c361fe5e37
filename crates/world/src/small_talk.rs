//! Small talk in many words. The table of [`crate::talk::SMALL_TALK`] asks each social
//! move (a greeting, "how are you", thanks, goodbye, "who are you") in two or three fixed
//! sentences, and a 4M-parameter model trained on them answered the held-out wordings
//! with whatever table answer was nearest in sound: "Jupiter is a gas giant." to "I have
//! to go now, see you later!". Here each move is composed from openings, cores and
//! endings, a few hundred sentences per language, so that the move, not the sentence, is
//! what training ties to its answer. Held-out small talk stays in the table, and no
//! composed sentence contains a held-out one (tested).

use crate::talk::{ABOUT_ME, BYE, CAN_DO, HELLO, ME, THANKS, WELL};
use crate::types::Lang;
use std::sync::OnceLock;

/// One social move in one language: every `opener + core + tail` asks it; the answer is
/// one of `answers`, and any good reply contains one of `words`.
struct Move {
    lang: Lang,
    openers: &'static [&'static str],
    cores: &'static [&'static str],
    tails: &'static [&'static str],
    answers: &'static [&'static str],
    words: &'static [&'static str],
}

/// A composed small-talk prompt with its answer and the words a good reply contains.
#[derive(Debug, Clone)]
pub struct Said {
    pub lang: Lang,
    pub prompt: String,
    pub answer: &'static str,
    pub words: &'static [&'static str],
}

const MOVES: &[Move] = &[
    Move {
        lang: Lang::En,
        openers: &["", "Hey, ", "Hi, ", "Hello, ", "So, ", "Hi there, "],
        cores: &[
            "how are you",
            "how are you doing",
            "how are things",
            "how have you been",
            "how is your day going",
            "how is your day",
            "how is life",
            "are you doing well",
            "how are you feeling today",
            "how has your week been",
        ],
        tails: &["?"],
        answers: &[
            "I'm doing well, thank you! How can I help you?",
            "Good, thanks for asking! What can I do for you?",
        ],
        words: WELL[0],
    },
    Move {
        lang: Lang::En,
        openers: &[""],
        cores: &[
            "Thank you",
            "Thanks",
            "Thanks a lot",
            "Thank you so much",
            "Thank you very much",
            "Thanks a million",
            "Cheers",
        ],
        tails: &[
            "!",
            ", that helped.",
            ", that was helpful.",
            " for your help.",
            ", you were a big help.",
            ", great answer!",
            ", that is just what I needed.",
            " for the quick answer.",
        ],
        answers: &[
            "You're welcome! I'm glad I could help.",
            "You're welcome! Glad to help.",
            "It was my pleasure! I'm glad it helped.",
        ],
        words: THANKS[0],
    },
    Move {
        lang: Lang::En,
        openers: &[
            "",
            "I must go now. ",
            "That's all for today. ",
            "I'm off. ",
            "Time for me to leave. ",
            "I have a class now. ",
        ],
        cores: &[
            "Goodbye!",
            "Bye!",
            "Bye for now!",
            "See you soon!",
            "See you tomorrow!",
            "Talk to you soon!",
            "Take care!",
            "Catch you later!",
        ],
        tails: &[""],
        answers: &["Goodbye! Have a nice day.", "Bye! Come back any time."],
        words: BYE[0],
    },
    Move {
        lang: Lang::En,
        openers: &[""],
        cores: &[
            "Hello",
            "Hi",
            "Hey there",
            "Hello there",
            "Hi again",
            "Hey",
            "Greetings",
        ],
        tails: &[
            "!",
            ", is anyone there?",
            ", I'm new here.",
            ", can we talk?",
        ],
        answers: &[
            "Hello! How can I help you today?",
            "Hi! What would you like to know?",
        ],
        words: HELLO[0],
    },
    Move {
        lang: Lang::En,
        openers: &["", "Hi! ", "Before we start: "],
        cores: &[
            "Who are you?",
            "What are you?",
            "What is your name?",
            "What should I call you?",
            "Tell me about yourself.",
            "Please tell me who you are.",
            "Are you a person or a program?",
            "Who am I talking to?",
            "Say something about yourself.",
            "Tell me who you are.",
        ],
        tails: &[""],
        answers: &[ABOUT_ME[0]],
        words: ME[0],
    },
    Move {
        lang: Lang::En,
        openers: &["", "Hi! "],
        cores: &[
            "What can you do?",
            "What are you good at?",
            "What do you do?",
            "How can you help me?",
            "What kinds of questions can you answer?",
        ],
        tails: &[""],
        answers: &[CAN_DO[0]],
        words: ME[0],
    },
    Move {
        lang: Lang::Zh,
        openers: &["", "嗨，", "你好，", "喂，", "哎，"],
        cores: &[
            "你好吗",
            "最近好吗",
            "最近还好吗",
            "今天怎么样",
            "你今天好吗",
            "一切都好吗",
            "最近怎么样",
            "这几天还好吗",
            "今天心情好吗",
            "这周顺利吗",
        ],
        tails: &["？"],
        answers: &[
            "我很好，谢谢！有什么可以帮你的吗？",
            "都很好，谢谢关心！有什么可以帮你的吗？",
        ],
        words: WELL[1],
    },
    Move {
        lang: Lang::Zh,
        openers: &[""],
        cores: &[
            "谢谢",
            "谢谢你",
            "多谢",
            "非常感谢",
            "感谢你",
            "真是谢谢你",
            "十分感谢",
        ],
        tails: &[
            "！",
            "，很有帮助。",
            "，这正是我需要的。",
            "，你说得很清楚。",
            "，帮到我了。",
            "，回答得真好！",
        ],
        answers: &[
            "不客气！很高兴能帮到你。",
            "不客气！",
            "不用谢！很高兴能帮到你。",
        ],
        words: THANKS[1],
    },
    Move {
        lang: Lang::Zh,
        openers: &[
            "",
            "今天就到这里吧，",
            "我要去上课了，",
            "时间不早了，",
            "好了，",
            "我先走了，",
        ],
        cores: &[
            "再见！",
            "拜拜！",
            "下次见！",
            "明天见！",
            "改天再聊！",
            "保重！",
        ],
        tails: &[""],
        answers: &["再见！祝你愉快。", "再见！欢迎随时回来。"],
        words: BYE[1],
    },
    Move {
        lang: Lang::Zh,
        openers: &[""],
        cores: &["你好", "嗨", "哈喽", "您好", "你好呀"],
        tails: &["！", "，在吗？", "，我是新来的。", "，可以聊聊吗？"],
        answers: &["你好！有什么可以帮你的吗？", "你好！想了解些什么？"],
        words: HELLO[1],
    },
    Move {
        lang: Lang::Zh,
        openers: &["", "你好，", "先问一下，"],
        cores: &[
            "你是谁？",
            "你叫什么名字？",
            "你是什么？",
            "怎么称呼你？",
            "说说你是谁吧。",
            "你是人还是程序？",
            "我在和谁说话？",
            "讲讲你自己。",
            "告诉我你是谁。",
        ],
        tails: &[""],
        answers: &[ABOUT_ME[1]],
        words: ME[1],
    },
    Move {
        lang: Lang::Zh,
        openers: &["", "你好，"],
        cores: &[
            "你能做什么？",
            "你擅长什么？",
            "你会做些什么？",
            "你能怎么帮我？",
            "你能回答哪些问题？",
        ],
        tails: &[""],
        answers: &[CAN_DO[1]],
        words: ME[1],
    },
];

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Every composed small-talk prompt, both languages, in a fixed order.
pub fn all() -> &'static [Said] {
    static ALL: OnceLock<Vec<Said>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut out: Vec<Said> = Vec::new();
        for m in MOVES {
            for (oi, o) in m.openers.iter().enumerate() {
                for (ci, c) in m.cores.iter().enumerate() {
                    for (ti, t) in m.tails.iter().enumerate() {
                        let prompt = capitalised(&format!("{o}{c}{t}"));
                        if out.iter().any(|s| s.prompt == prompt) {
                            continue;
                        }
                        out.push(Said {
                            lang: m.lang,
                            prompt,
                            answer: m.answers[(oi + ci + ti) % m.answers.len()],
                            words: m.words,
                        });
                    }
                }
            }
        }
        out
    })
}

/// The composed prompts of one language.
pub fn in_lang(lang: Lang) -> Vec<&'static Said> {
    all().iter().filter(|s| s.lang == lang).collect()
}

/// The composed prompt `q`, if it is one.
pub fn find(q: &str) -> Option<&'static Said> {
    all().iter().find(|s| s.prompt == q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::style::is_refusal;

    #[test]
    fn composed_small_talk_is_many_distinct_sentences_with_right_answers() {
        // the README quotes these counts
        for (lang, n) in [(Lang::En, 232), (Lang::Zh, 185)] {
            let said = in_lang(lang);
            assert_eq!(said.len(), n, "{lang:?}");
            for s in said {
                let a = s.answer.to_lowercase();
                assert!(s.words.iter().any(|w| a.contains(w)), "{}", s.answer);
                assert!(!is_refusal(s.answer));
                let han = s.prompt.chars().any(crate::style::is_han);
                assert_eq!(han, lang == Lang::Zh, "{}", s.prompt);
            }
        }
        assert_eq!(find("Hey, how is life?").map(|s| s.lang), Some(Lang::En));
        assert_eq!(
            find("Cheers for your help.").map(|s| s.words),
            Some(THANKS[0])
        );
    }

    #[test]
    fn no_composed_sentence_is_or_holds_a_held_out_one() {
        let held = crate::heldout_wordings();
        for s in all() {
            for w in &held {
                assert!(!s.prompt.contains(w), "{} holds {w}", s.prompt);
            }
        }
        for c in crate::talk::SMALL_TALK.iter().filter(|c| c.heldout) {
            for l in Lang::ALL {
                assert!(find(c.get(l).0).is_none(), "{}", c.get(l).0);
            }
        }
    }
}
