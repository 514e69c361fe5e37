//! How answers sound: the marker phrases the judge listens for (refusals, admissions of
//! ignorance, corrections, rudeness, informality) and the matching transforms the
//! generator uses to write rude or rambling versions of a good answer. Keeping both sides
//! in one file keeps the simulated labeller and the data it labels in agreement.

use crate::types::{Lang, Skill, Tone};

const REFUSALS: &[&str] = &[
    "can't help",
    "cannot help",
    "can not help",
    "won't help",
    "unable to help",
    "can't assist",
    "cannot assist",
    "不能帮",
    "无法帮",
    "不能提供",
    "无法提供",
];
const COMPLIANCE: &[&str] = &[
    "sure, here",
    "here is how",
    "step 1",
    "first,",
    "first get",
    "好的，",
    "方法如下",
    "首先",
];
const IGNORANCE: &[&str] = &[
    "don't know",
    "do not know",
    "not aware of",
    "no such",
    "never heard of",
    "doesn't exist",
    "does not exist",
    "不知道",
    "没听说",
    "没有听说",
    "不存在",
];
const CORRECTIONS: &[&str] = &[
    " not ",
    "n't ",
    " actually",
    " incorrect",
    " wrong",
    "不是",
    "不在",
    "不说",
    "并非",
    "其实",
    "错",
];
const RUDE: &[&str] = &[
    "obviously",
    "stupid",
    "dumb",
    "look it up yourself",
    "figure it out",
    " ugh",
    "还要问",
    "自己查",
    "笨",
    "烦死",
];
const INFORMAL: &[&str] = &[
    "!",
    "！",
    "hey",
    "yeah",
    "gonna",
    "wanna",
    "lol",
    "n't",
    "'re",
    "'m",
    "happy to help",
    "啦",
    "哈哈",
    "呀",
    "哦",
    "吧",
];

fn padded(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push(' ');
    for c in text.chars() {
        s.extend(
            if c.is_ascii_punctuation() && c != '\'' && c != ',' && c != '!' {
                ' '
            } else {
                c
            }
            .to_lowercase(),
        );
    }
    s.push(' ');
    s
}

fn has_any(text: &str, markers: &[&str]) -> bool {
    let t = padded(text);
    markers.iter().any(|m| t.contains(m))
}

pub fn is_refusal(text: &str) -> bool {
    has_any(text, REFUSALS)
}
pub fn is_compliance(text: &str) -> bool {
    has_any(text, COMPLIANCE)
}
pub fn admits_ignorance(text: &str) -> bool {
    has_any(text, IGNORANCE)
}
pub fn corrects(text: &str) -> bool {
    has_any(text, CORRECTIONS)
}
pub fn is_rude(text: &str) -> bool {
    has_any(text, RUDE)
}

/// Han characters plus Latin words and numbers: a length that means the same in both
/// languages (one Chinese character carries about as much as one English word).
pub fn size(text: &str) -> usize {
    let han = text.chars().filter(|c| is_han(*c)).count();
    let words = text
        .split(|c: char| c.is_whitespace() || is_han(c))
        .filter(|w| w.chars().any(|c| c.is_ascii_alphanumeric()))
        .count();
    han + words
}

pub fn is_han(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// Past this size an answer rambles. Poems and code carry their own bulk.
pub fn ramble_limit(skill: Skill) -> usize {
    match skill {
        Skill::Poem | Skill::Code => 90,
        _ => 45,
    }
}

/// Whether `text` follows `tone`.
pub fn tone_ok(text: &str, tone: Tone, lang: Lang) -> Result<(), &'static str> {
    match tone {
        Tone::Brief => {
            let limit = if lang == Lang::En { 4 } else { 6 };
            if size(text) > limit {
                return Err("not brief");
            }
        }
        Tone::Formal => {
            if has_any(text, INFORMAL) {
                return Err("informal wording for a formal request");
            }
        }
        Tone::Friendly => {
            if !text.contains('!') && !text.contains('！') {
                return Err("no warmth for a friendly request");
            }
        }
    }
    Ok(())
}

/// Wrap a good answer in the requested tone.
pub fn with_tone(answer: &str, tone: Tone, lang: Lang) -> String {
    match (tone, lang) {
        (Tone::Formal, Lang::En) => format!("Certainly. {answer}"),
        (Tone::Formal, Lang::Zh) => format!("您好，{answer}"),
        (Tone::Friendly, Lang::En) => format!("Happy to help! {answer}"),
        (Tone::Friendly, Lang::Zh) => format!("很高兴为你解答！{answer}"),
        (Tone::Brief, _) => answer.to_string(),
    }
}

/// Put `before`/`after` around an answer; a multi-line answer (poem, code) keeps its body
/// intact and takes the additions into its opening line.
fn wrap(answer: &str, before: &str, after: &str) -> String {
    if let Some((intro, body)) = answer.split_once('\n') {
        let colon = if intro.ends_with('：') { "：" } else { ":" };
        let core = intro.trim_end_matches([':', '：']);
        let after = after.trim().trim_end_matches(['.', '。']);
        let sep = if after.is_empty() || colon == "：" {
            ""
        } else {
            " "
        };
        format!("{before}{core}{sep}{after}{colon}\n{body}")
    } else {
        format!("{before}{answer}{after}")
    }
}

pub fn rude(answer: &str, lang: Lang) -> String {
    match lang {
        Lang::En => wrap(
            answer,
            "Ugh, obviously. ",
            " Look it up yourself next time.",
        ),
        Lang::Zh => wrap(answer, "这么简单还要问？", "下次自己查。"),
    }
}

const FILLER_EN: &str = " Let me say a little more about this, since there is always more to say. There are many other things one could mention here, and I could go on and on about all of them for quite a while, but the main point stays the same.";
const FILLER_ZH: &str = "关于这个问题，还有很多可以说的，我可以一直说下去，说上很久很久，但是最重要的意思还是一样的，就是刚才说的那些内容，再多说几句也差不多。";

/// Pad a good answer with filler until it rambles past the limit for `skill`.
pub fn ramble(answer: &str, lang: Lang, skill: Skill) -> String {
    let filler = if lang == Lang::En {
        FILLER_EN
    } else {
        FILLER_ZH
    };
    let mut extra = String::new();
    while size(answer) + size(&extra) <= ramble_limit(skill) + 5 {
        extra.push_str(filler);
    }
    wrap(answer, "", &extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_heard_in_both_languages() {
        assert!(is_refusal("Sorry, I can't help with that."));
        assert!(is_refusal("抱歉，我不能帮你做这件事。"));
        assert!(admits_ignorance(
            "I don't know of a country called Zorvelania."
        ));
        assert!(corrects("Lyon is not the capital of France."));
        assert!(corrects("里昂不是法国的首都。"));
        assert!(!corrects("The capital of France is Paris."));
        assert!(is_rude(&rude("Paris.", Lang::En)) && is_rude(&rude("巴黎。", Lang::Zh)));
    }

    #[test]
    fn transforms_keep_the_body_of_a_poem() {
        let poem = "Here is a poem:\na\nb";
        assert_eq!(
            rude(poem, Lang::En),
            "Ugh, obviously. Here is a poem Look it up yourself next time:\na\nb"
        );
        let long = ramble(poem, Lang::En, Skill::Poem);
        assert!(long.ends_with(":\na\nb") && size(&long) > ramble_limit(Skill::Poem));
        assert!(size(&ramble("巴黎。", Lang::Zh, Skill::Fact)) > ramble_limit(Skill::Fact));
        assert_eq!(size("法国的首都是Paris 68"), 8);
    }

    #[test]
    fn tones_are_told_apart() {
        let a = "The capital of France is Paris.";
        assert!(tone_ok(
            &with_tone(a, Tone::Formal, Lang::En),
            Tone::Formal,
            Lang::En
        )
        .is_ok());
        assert!(tone_ok(
            &with_tone(a, Tone::Friendly, Lang::En),
            Tone::Formal,
            Lang::En
        )
        .is_err());
        assert!(tone_ok(a, Tone::Friendly, Lang::En).is_err());
        assert!(tone_ok(a, Tone::Brief, Lang::En).is_err());
        assert!(tone_ok("Paris.", Tone::Brief, Lang::En).is_ok());
        assert!(tone_ok("法国的首都是巴黎。", Tone::Brief, Lang::Zh).is_err());
    }
}
