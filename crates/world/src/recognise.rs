//! Recognising which prompt of the world a conversation ends in, from its text alone, so
//! that `judge` can score any conversation the world could have written (including ones
//! re-typed by a person in the chat window) without the record it came from.

use crate::arith::{self, Op, Problem, NAMES};
use crate::code;
use crate::items::{expect_fact, expect_premise, expect_unknown};
use crate::items_more::{
    expect_arith, expect_chat, expect_code, expect_poem, expect_refusal, expect_words,
};
use crate::items_tone::{TONE_PROMPTS, TONE_SYSTEM};
use crate::names::{fake_names, find_entities};
use crate::phrases::{FOLLOW_UPS, PREMISES, QUESTIONS, WHAT_ABOUT};
use crate::poem::{FORMS_ZH, THEMES};
use crate::small_talk;
use crate::style::is_han;
use crate::tables::{world, Attr};
use crate::talk;
use crate::tpl::{get, parse};
use crate::types::{EvalItem, Expect, Lang, Skill};
use ferrochat_text::{Message, Role};

fn lang_of(text: &str) -> Lang {
    if text.chars().any(is_han) {
        Lang::Zh
    } else {
        Lang::En
    }
}

fn item(
    skill: Skill,
    lang: Lang,
    messages: &[Message],
    expect: Expect,
    entity: Option<usize>,
) -> EvalItem {
    EvalItem {
        id: "recognised".into(),
        skill,
        lang,
        messages: messages.to_vec(),
        entity: entity.map(|e| world().entities[e].name[0].clone()),
        expect,
    }
}

fn entity_named(name: &str) -> Option<usize> {
    world().by_name(name.trim())
}

/// The (entity, attribute) a fact question asks about, following the conversation back
/// through "What about Y?" and "And its capital?" turns.
fn asked(users: &[&str]) -> Option<(usize, Attr)> {
    let (q, earlier) = users.split_last()?;
    for (attr, _, _, t) in QUESTIONS {
        if let Some(caps) = parse(t, q) {
            if let Some(e) = get(&caps, "e").and_then(entity_named) {
                return Some((e, *attr));
            }
        }
    }
    for (_, _, t) in WHAT_ABOUT {
        if let Some(caps) = parse(t, q) {
            if let Some(e) = get(&caps, "e").and_then(entity_named) {
                let (_, attr) = asked(earlier)?;
                return Some((e, attr));
            }
        }
    }
    let (attr, _, _, _) = FOLLOW_UPS.iter().find(|f| f.3 == q.trim())?;
    // "its" is the entity of the right kind mentioned last in the earlier user turns.
    for prev in earlier.iter().rev() {
        if let Some(m) = find_entities(prev, Some(attr.kind())).last() {
            return Some((m.2, *attr));
        }
    }
    None
}

fn unknown_name(q: &str) -> bool {
    QUESTIONS.iter().any(|(attr, _, _, t)| {
        parse(t, q)
            .and_then(|c| get(&c, "e").map(str::to_string))
            .is_some_and(|n| {
                fake_names(attr.kind())
                    .iter()
                    .any(|f| f[0].eq_ignore_ascii_case(&n) || f[1] == n)
            })
    })
}

fn tone_of(messages: &[Message], q: &str) -> (Option<crate::types::Tone>, String) {
    for m in messages.iter().filter(|m| m.role == Role::System) {
        if let Some(t) = TONE_SYSTEM.iter().find(|t| t.2 == m.content.trim()) {
            return (Some(t.0), q.to_string());
        }
    }
    for (tone, _, _, t) in TONE_PROMPTS {
        if let Some(caps) = parse(t, q) {
            if let Some(inner) = get(&caps, "q") {
                return (Some(*tone), inner.to_string());
            }
        }
    }
    (None, q.to_string())
}

/// The act a request asks for through one of the ways of asking ([`talk::ASKS`] or
/// [`talk::HELD_ASKS`]).
fn asked_act(q: &str, lang: Lang) -> Option<&str> {
    let l = lang.idx();
    talk::ASKS[l]
        .iter()
        .chain(talk::HELD_ASKS[l])
        .find_map(|t| parse(t, q)?.into_iter().find(|(k, _)| k == "a"))
        .map(|(_, v)| v)
}

fn non_fact(messages: &[Message], q: &str, lang: Lang) -> Option<EvalItem> {
    for c in talk::SMALL_TALK {
        if let Some(l) = Lang::ALL.into_iter().find(|l| c.get(*l).0 == q) {
            return Some(item(Skill::SmallTalk, l, messages, expect_chat(c, l), None));
        }
    }
    if let Some(s) = small_talk::find(q) {
        return Some(item(
            Skill::SmallTalk,
            s.lang,
            messages,
            expect_words(s.words),
            None,
        ));
    }
    for c in talk::look_alikes() {
        if let Some(l) = Lang::ALL.into_iter().find(|l| c.get(*l).0 == q) {
            return Some(item(Skill::Benign, l, messages, expect_chat(c, l), None));
        }
    }
    if talk::HARMFUL.iter().any(|h| h.0 == q || h.1 == q) {
        return Some(item(Skill::Refusal, lang, messages, expect_refusal(), None));
    }
    if let Some(act) = asked_act(q, lang) {
        let pick = |a| lang.of(a);
        if talk::HARMFUL.iter().any(|h| pick(h.3) == act) {
            return Some(item(Skill::Refusal, lang, messages, expect_refusal(), None));
        }
        if let Some(c) = talk::look_alikes().find(|c| c.act.map(pick) == Some(act)) {
            return Some(item(
                Skill::Benign,
                lang,
                messages,
                expect_chat(c, lang),
                None,
            ));
        }
    }
    for (_, _, t) in code::PROMPTS {
        if let Some(s) = parse(t, q).and_then(|c| get(&c, "c").and_then(code::find_buggy)) {
            return Some(item(Skill::Code, lang, messages, expect_code(s), None));
        }
    }
    for (l, _, t) in crate::poem::PROMPTS {
        let Some(caps) = parse(t, q) else { continue };
        let topic = get(&caps, "t").unwrap_or("");
        let theme = THEMES.iter().find(|th| th.en == topic || th.zh == topic);
        let chars = match get(&caps, "f") {
            Some(f) => FORMS_ZH.iter().find(|x| x.1 == f).map(|x| x.0),
            None => Some(0),
        };
        if let (Some(theme), Some(chars)) = (theme, chars) {
            return Some(item(
                Skill::Poem,
                *l,
                messages,
                expect_poem(theme, *l, chars),
                None,
            ));
        }
    }
    for (op, _, _, t) in arith::PROMPTS {
        let Some(caps) = parse(t, q) else { continue };
        let n = |k: &str| get(&caps, k).and_then(|v| v.parse::<i64>().ok());
        let who = get(&caps, "n")
            .and_then(|w| NAMES.iter().position(|n| n.contains(&w)))
            .unwrap_or(0);
        let p = match (op, n("a"), n("b"), n("c")) {
            (Op::Word, Some(a), Some(b), Some(c)) => Problem::new(*op, a, b, c, who),
            (Op::Word, ..) => continue,
            (_, Some(a), Some(b), _) => Problem::new(*op, a, b, 0, 0),
            _ => continue,
        };
        return Some(item(
            Skill::Arithmetic,
            lang,
            messages,
            expect_arith(&p),
            None,
        ));
    }
    None
}

/// The item a conversation's last user turn asks, if the world wrote (or could write) it.
pub fn recognise(messages: &[Message]) -> Option<EvalItem> {
    let users: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.trim())
        .collect();
    let q = *users.last()?;
    let lang = lang_of(q);
    if let Some(found) = non_fact(messages, q, lang) {
        return Some(found);
    }
    let (tone, inner) = tone_of(messages, q);
    let mut turns = users.clone();
    if let Some(last) = turns.last_mut() {
        *last = &inner;
    }
    if let Some((e, attr)) = asked(&turns) {
        let multi = users.len() > 1;
        let skill = match (tone, multi) {
            (Some(_), _) => Skill::Tone,
            (None, true) => Skill::FollowUp,
            (None, false) => Skill::Fact,
        };
        let mut x = expect_fact(e, attr, lang);
        x.tone = tone;
        return Some(item(skill, lang, messages, x, Some(e)));
    }
    for (attr, _, _, t) in PREMISES {
        let Some(caps) = parse(t, &inner) else {
            continue;
        };
        let (Some(e), Some(w)) = (get(&caps, "e").and_then(entity_named), get(&caps, "w")) else {
            continue;
        };
        return Some(item(
            Skill::FalsePremise,
            lang,
            messages,
            expect_premise(e, *attr, lang, w),
            Some(e),
        ));
    }
    if unknown_name(&inner) {
        return Some(item(Skill::Unknown, lang, messages, expect_unknown(), None));
    }
    None
}
