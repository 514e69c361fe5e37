//! How a prompt reaches a model. A chat model gets the conversation through its chat
//! template. A base model has never seen that template, so it is prompted the GPT-3 way:
//! k worked question/answer examples from the world's training items, then the
//! conversation as Q/A lines, ending in an open "A:".

use ferrochat_text::{Message, Role};
use ferrochat_world::{few_shot_examples, EvalItem};

#[derive(Debug, Clone, PartialEq)]
pub enum PromptStyle {
    Chat,
    FewShot { k: usize, seed: u64 },
}

fn labels(zh: bool) -> (&'static str, &'static str) {
    if zh {
        ("问：", "答：")
    } else {
        ("Q: ", "A: ")
    }
}

/// The few-shot text prompt for an item (without BOS).
pub fn few_shot_prompt(item: &EvalItem, style: &PromptStyle) -> String {
    let (k, seed) = match style {
        PromptStyle::FewShot { k, seed } => (*k, *seed),
        PromptStyle::Chat => (0, 0),
    };
    let zh = item.lang == ferrochat_world::Lang::Zh;
    let (q, a) = labels(zh);
    let lines = |messages: &[Message]| {
        let mut s = String::new();
        for m in messages {
            match m.role {
                Role::System => s += &format!("({})\n", one_line(&m.content)),
                Role::User => s += &format!("{q}{}\n", one_line(&m.content)),
                Role::Assistant => s += &format!("{a}{}\n", one_line(&m.content)),
            }
        }
        s
    };
    let mut s = String::new();
    for example in few_shot_examples(k, item.skill, item.lang, seed) {
        s += &lines(&example);
        s += "\n";
    }
    s += &lines(&item.messages);
    s += a.trim_end();
    s
}

/// Multi-line contents (poems, code) are kept on one line with a visible separator, so
/// "end of line" can mean "end of answer".
fn one_line(s: &str) -> String {
    s.trim().replace('\n', " / ")
}
