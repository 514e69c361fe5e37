//! Items that ask for a tone or length (formal, friendly, brief) on top of a fact question.

use crate::facts::{answer, brief};
use crate::items::{expect_fact, kind_for_fact, question, wrong_answer, Ctx, Item};
use crate::style::with_tone;
use crate::tables::{world, Attr};
use crate::tpl::render;
use crate::types::{Lang, Skill, Tone};
use ferrochat_text::Message;
use rand::seq::IndexedRandom;
use rand::Rng;

/// How tone requests are phrased: a prefix to the question, or a system message.
pub const TONE_PROMPTS: &[(Tone, Lang, bool, &str)] = &[
    (Tone::Formal, Lang::En, false, "Please answer formally. {q}"),
    (
        Tone::Formal,
        Lang::En,
        false,
        "Answer in a formal tone: {q}",
    ),
    (
        Tone::Formal,
        Lang::En,
        true,
        "Use a courteous, official register. {q}",
    ),
    (
        Tone::Friendly,
        Lang::En,
        false,
        "Answer in a friendly way! {q}",
    ),
    (Tone::Friendly, Lang::En, false, "Be warm and friendly. {q}"),
    (
        Tone::Friendly,
        Lang::En,
        true,
        "Talk to me like a cheerful buddy would. {q}",
    ),
    (Tone::Brief, Lang::En, false, "Be brief. {q}"),
    (
        Tone::Brief,
        Lang::En,
        false,
        "Answer in as few words as possible: {q}",
    ),
    (Tone::Brief, Lang::En, true, "Keep it super short. {q}"),
    (Tone::Formal, Lang::Zh, false, "请用正式的语气回答：{q}"),
    (Tone::Formal, Lang::Zh, false, "请正式地回答。{q}"),
    (Tone::Formal, Lang::Zh, true, "请以庄重得体的口吻答复：{q}"),
    (Tone::Friendly, Lang::Zh, false, "请用友好的语气回答！{q}"),
    (Tone::Friendly, Lang::Zh, false, "轻松一点回答我吧！{q}"),
    (
        Tone::Friendly,
        Lang::Zh,
        true,
        "像老朋友聊天那样告诉我：{q}",
    ),
    (Tone::Brief, Lang::Zh, false, "请简短回答：{q}"),
    (Tone::Brief, Lang::Zh, false, "用最少的字回答：{q}"),
    (Tone::Brief, Lang::Zh, true, "越短越好：{q}"),
];

/// The same requests as system messages (training wordings only).
pub const TONE_SYSTEM: &[(Tone, Lang, &str)] = &[
    (Tone::Formal, Lang::En, "Always answer formally."),
    (Tone::Friendly, Lang::En, "Always answer in a friendly way."),
    (Tone::Brief, Lang::En, "Always answer briefly."),
    (Tone::Formal, Lang::Zh, "请始终用正式的语气回答。"),
    (Tone::Friendly, Lang::Zh, "请始终用友好的语气回答。"),
    (Tone::Brief, Lang::Zh, "请始终简短回答。"),
];

/// A fact question with a requested tone or length.
pub fn tone(ctx: &mut Ctx, lang: Lang) -> Item {
    let tone = *[Tone::Formal, Tone::Friendly, Tone::Brief]
        .choose(ctx.rng)
        .unwrap_or(&Tone::Brief);
    let kind = kind_for_fact(ctx.rng, !ctx.heldout);
    let e = ctx.entity(kind);
    let attr = *Attr::of_kind(kind)
        .choose(ctx.rng)
        .unwrap_or(&Attr::Capital);
    let q = question(ctx, e, attr, lang);
    let system = !ctx.heldout && ctx.rng.random_bool(0.3);
    let prompt = if system {
        let s = TONE_SYSTEM
            .iter()
            .find(|t| t.0 == tone && t.1 == lang)
            .map_or("", |t| t.2);
        vec![Message::system(s), Message::user(q)]
    } else {
        let t = ctx
            .template(TONE_PROMPTS, |t| t.0 == tone && t.1 == lang, |t| t.2)
            .map_or("{q}", |t| t.3);
        vec![Message::user(render(t, &[("q", &q)]))]
    };
    let en = &world().entities[e];
    let plain = answer(en, attr, lang);
    let gold = match tone {
        Tone::Brief => brief(en, attr, lang),
        t => with_tone(&plain, t, lang),
    };
    let off_tone = match tone {
        Tone::Formal => with_tone(&plain, Tone::Friendly, lang),
        Tone::Friendly => with_tone(&plain, Tone::Formal, lang),
        Tone::Brief => with_tone(&plain, Tone::Formal, lang),
    };
    let mut mistakes = vec![off_tone];
    if let Some(w) = wrong_answer(ctx, e, attr, lang) {
        mistakes.push(match tone {
            Tone::Brief => w,
            t => with_tone(&w, t, lang),
        });
    }
    let mut expect = expect_fact(e, attr, lang);
    expect.tone = Some(tone);
    Item {
        skill: Skill::Tone,
        lang,
        prompt,
        expect,
        gold,
        mistakes,
        entity: Some(en.name[0].clone()),
    }
}
