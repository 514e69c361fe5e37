//! Items for the skills that are not about facts: small talk, refusals and their harmless
//! look-alikes, poems, code fixes and arithmetic.

use crate::arith::{self, Op, Problem};
use crate::code::{self, Snippet};
use crate::items::{Ctx, Item};
use crate::poem::{self, Theme, FORMS_ZH, THEMES};
use crate::small_talk;
use crate::talk::{self, Chat};
use crate::tpl::render;
use crate::types::{CodeSpec, Expect, Lang, Skill};
use ferrochat_text::Message;
use rand::seq::IndexedRandom;
use rand::Rng;

pub fn expect_chat(c: &Chat, lang: Lang) -> Expect {
    expect_words(c.get(lang).2)
}

/// A reply that must contain one of `words`.
pub fn expect_words(words: &[&str]) -> Expect {
    Expect {
        any_of: words.iter().map(|s| s.to_string()).collect(),
        ..Expect::default()
    }
}

pub fn expect_refusal() -> Expect {
    Expect {
        refuse: true,
        ..Expect::default()
    }
}

pub fn expect_poem(theme: &Theme, lang: Lang, chars: usize) -> Expect {
    Expect {
        poem: Some(poem::spec(theme, lang, chars)),
        ..Expect::default()
    }
}

pub fn expect_code(s: &Snippet) -> Expect {
    Expect {
        code: Some(CodeSpec {
            fixed: s.fixed.clone(),
            buggy: s.buggy.clone(),
        }),
        ..Expect::default()
    }
}

pub fn expect_arith(p: &Problem) -> Expect {
    Expect {
        number: Some(p.result() as f64),
        final_number: true,
        ..Expect::default()
    }
}

fn unsure(lang: Lang) -> String {
    match lang {
        Lang::En => "I am not sure what you mean.".into(),
        Lang::Zh => "我不太明白你的意思。".into(),
    }
}

fn chat_entry<'a>(ctx: &mut Ctx, table: &'a [Chat]) -> &'a Chat {
    let held = ctx.heldout;
    let options: Vec<&Chat> = table.iter().filter(|c| c.heldout == held).collect();
    options.choose(ctx.rng).copied().unwrap_or(&table[0])
}

pub fn small_talk(ctx: &mut Ctx, lang: Lang) -> Item {
    // Training asks half its small talk in composed sentences (many wordings of each
    // move), half in the table's; held-out small talk is the table's alone.
    let composed = if ctx.heldout || ctx.rng.random_bool(0.5) {
        None
    } else {
        small_talk::in_lang(lang).choose(ctx.rng).copied()
    };
    let (q, a, expect) = match composed {
        Some(s) => (s.prompt.as_str(), s.answer, expect_words(s.words)),
        None => {
            let c = chat_entry(ctx, talk::SMALL_TALK);
            let (q, a, _) = c.get(lang);
            (q, a, expect_chat(c, lang))
        }
    };
    Item {
        skill: Skill::SmallTalk,
        lang,
        prompt: vec![Message::user(q)],
        expect,
        gold: a.into(),
        mistakes: vec![unsure(lang)],
        entity: None,
    }
}

/// A held-out request as evaluation asks it: in its own sentence or, as often, through
/// one of the held-out ways of asking for its act ([`talk::HELD_ASKS`]).
fn held_out_ask(ctx: &mut Ctx, lang: Lang, own: &str, act: Option<(&str, &str)>) -> String {
    let asks = talk::HELD_ASKS[lang.idx()];
    match (act, ctx.rng.random_range(0..=asks.len())) {
        (Some(act), k) if k < asks.len() => render(asks[k], &[("a", lang.of(act))]),
        _ => own.to_string(),
    }
}

pub fn benign(ctx: &mut Ctx, lang: Lang) -> Item {
    // training also asks for the held-out look-alikes' know-how in plain words: KNOW_HOW
    // gets one draw per held-out look-alike (6 in 21), so each of the 15 trained
    // look-alikes and each of the 6 pieces of know-how is asked equally often
    let know_how_draws = talk::BENIGN.iter().filter(|c| c.heldout).count();
    let c = if !ctx.heldout && ctx.rng.random_range(0..talk::BENIGN.len()) < know_how_draws {
        chat_entry(ctx, talk::KNOW_HOW)
    } else {
        chat_entry(ctx, talk::BENIGN)
    };
    let (q, a, _) = c.get(lang);
    let q = if ctx.heldout {
        held_out_ask(ctx, lang, q, c.act)
    } else {
        q.to_string()
    };
    Item {
        skill: Skill::Benign,
        lang,
        prompt: vec![Message::user(q)],
        expect: expect_chat(c, lang),
        gold: a.into(),
        mistakes: vec![talk::REFUSAL[lang.idx()].into(), unsure(lang)],
        entity: None,
    }
}

pub fn refusal(ctx: &mut Ctx, lang: Lang) -> Item {
    let held = ctx.heldout;
    let options: Vec<_> = talk::HARMFUL.iter().filter(|h| h.2 == held).collect();
    let h = options
        .choose(ctx.rng)
        .copied()
        .unwrap_or(&talk::HARMFUL[0]);
    let q = lang.of((h.0, h.1));
    let q = if held {
        held_out_ask(ctx, lang, q, Some(h.3))
    } else {
        q.to_string()
    };
    Item {
        skill: Skill::Refusal,
        lang,
        prompt: vec![Message::user(q)],
        expect: expect_refusal(),
        gold: talk::REFUSAL[lang.idx()].into(),
        mistakes: vec![talk::COMPLIANCE[lang.idx()].into()],
        entity: None,
    }
}

pub fn poem(ctx: &mut Ctx, lang: Lang) -> Item {
    let ti = ctx.rng.random_range(0..THEMES.len());
    let theme = &THEMES[ti];
    let chars = if ctx.rng.random_bool(0.5) { 5 } else { 7 };
    let form = FORMS_ZH.iter().find(|f| f.0 == chars).map_or("", |f| f.1);
    // Themes are shared, so a held-out poem prompt is new only through its wording.
    let held = ctx.heldout;
    let options: Vec<&(Lang, bool, &str)> = poem::PROMPTS
        .iter()
        .filter(|p| p.0 == lang && p.1 == held)
        .collect();
    let t = options.choose(ctx.rng).map_or("{t}", |p| p.2);
    let topic = if lang == Lang::En { theme.en } else { theme.zh };
    let q = render(t, &[("t", topic), ("f", form)]);
    let lines = poem::lines(theme, lang, chars, ctx.rng);
    let intro = poem::intro(theme, lang, chars);
    let gold = format!("{intro}\n{}", lines.join("\n"));
    // Mistakes: a line missing, a line of the wrong length (Chinese), another theme.
    let mut mistakes = vec![format!("{intro}\n{}", lines[..3].join("\n"))];
    if lang == Lang::Zh {
        let other = if chars == 5 {
            &theme.seven
        } else {
            &theme.five
        };
        let mut broken = lines.clone();
        broken[2] = format!("{}，", other[ctx.rng.random_range(0..other.len())]);
        mistakes.push(format!("{intro}\n{}", broken.join("\n")));
    }
    // Another theme's poem, unless its lines happen to touch this theme too (春江 is both).
    let key = if lang == Lang::En {
        theme.en_key
    } else {
        theme.zh
    };
    for _ in 0..5 {
        let other = &THEMES[(ti + 1 + ctx.rng.random_range(0..THEMES.len() - 1)) % THEMES.len()];
        let off = poem::lines(other, lang, chars, ctx.rng).join("\n");
        if !off.to_lowercase().contains(key) {
            mistakes.push(format!("{intro}\n{off}"));
            break;
        }
    }
    Item {
        skill: Skill::Poem,
        lang,
        prompt: vec![Message::user(q)],
        expect: expect_poem(theme, lang, chars),
        gold,
        mistakes,
        entity: None,
    }
}

pub fn code(ctx: &mut Ctx, lang: Lang) -> Item {
    let s = code::sample(ctx.heldout, ctx.rng);
    let t = ctx
        .template(code::PROMPTS, |p| p.0 == lang, |p| p.1)
        .map_or("{c}", |p| p.2);
    let q = render(t, &[("c", &s.buggy_block())]);
    Item {
        skill: Skill::Code,
        lang,
        prompt: vec![Message::user(q)],
        expect: expect_code(s),
        gold: s.answer(lang),
        mistakes: vec![s.unfixed(lang)],
        entity: None,
    }
}

pub fn arithmetic(ctx: &mut Ctx, lang: Lang) -> Item {
    let op = *[Op::Add, Op::Sub, Op::Mul, Op::Word, Op::Word]
        .choose(ctx.rng)
        .unwrap_or(&Op::Add);
    let p = Problem::sample(op, ctx.heldout, ctx.seed, ctx.rng);
    let tpl = ctx.template(arith::PROMPTS, |t| t.0 == op && t.1 == lang, |t| t.2);
    let (t, held_wording) = tpl.map_or(("{a}", false), |t| (t.3, t.2));
    let slip = if ctx.rng.random_bool(0.5) { 1 } else { 10 };
    Item {
        skill: Skill::Arithmetic,
        lang,
        prompt: vec![Message::user(p.prompt(t, lang))],
        expect: expect_arith(&p),
        gold: p.answer(lang, held_wording),
        mistakes: vec![p.answer_with(lang, p.result() + slip, held_wording)],
        entity: None,
    }
}
