//! One prompt of the world with its gold answer, realistic wrong answers, and the
//! expectation the judge holds answers to. This file builds the fact-based skills (facts,
//! follow-ups, false premises, made-up things, tone); `items_more.rs` the others. The
//! `expect_*` functions are shared with the recogniser so that a prompt judged from its
//! text alone is held to exactly what it was generated with.

use crate::facts::{self, answer, answer_with, name, wrong_value};
use crate::names::{fake_is_heldout, fake_names};
use crate::phrases::{self, pick};
use crate::tables::{world, Attr, Kind};
use crate::tpl::{capitalize, render};
use crate::types::{Expect, Lang, Skill};
use ferrochat_text::Message;
use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub struct Item {
    pub skill: Skill,
    pub lang: Lang,
    pub prompt: Vec<Message>,
    pub expect: Expect,
    pub gold: String,
    /// Realistic skill-specific mistakes (honest misses, or worse).
    pub mistakes: Vec<String>,
    pub entity: Option<String>,
}

/// Where an item is drawn from: training entities and wordings, or held-out ones.
pub struct Ctx<'a> {
    pub rng: &'a mut ChaCha8Rng,
    pub seed: u64,
    pub heldout: bool,
    pub held: &'a [bool],
}

impl Ctx<'_> {
    /// Held-out items use a held-out wording half the time, so evaluation measures both
    /// new facts in known wordings and new wordings.
    pub fn wording_heldout(&mut self) -> bool {
        self.heldout && self.rng.random_bool(0.5)
    }

    /// A template from `table` on the requested side of the split.
    pub fn template<T: Copy>(
        &mut self,
        table: &[T],
        fits: impl Fn(&T) -> bool,
        held: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let want_held = self.wording_heldout();
        let options = pick(table, |t| fits(t) && held(t) == want_held);
        let options = if options.is_empty() {
            pick(table, |t| fits(t) && !held(t))
        } else {
            options
        };
        options.choose(self.rng).copied()
    }

    /// An entity of `kind` from the item's side of the split (units have no held-out side;
    /// callers do not ask for one).
    pub fn entity(&mut self, kind: Kind) -> usize {
        let pool = self.pool(kind, self.heldout);
        pool.choose(self.rng).copied().unwrap_or(0)
    }

    /// Entities of `kind` on one side of the split. Distractors always come from the
    /// training side so no held-out name ever leaks into training data.
    pub fn pool(&self, kind: Kind, heldout: bool) -> Vec<usize> {
        world()
            .of_kind(kind)
            .filter(|(i, _)| self.held[*i] == heldout)
            .map(|(i, _)| i)
            .collect()
    }
}

pub fn kind_for_fact(rng: &mut ChaCha8Rng, with_units: bool) -> Kind {
    let r: f64 = rng.random();
    match r {
        r if r < 0.55 => Kind::Country,
        r if r < 0.8 => Kind::Element,
        r if r < 0.9 || !with_units => Kind::Planet,
        _ => Kind::Unit,
    }
}

pub fn expect_fact(entity: usize, attr: Attr, lang: Lang) -> Expect {
    facts::expect(&world().entities[entity], attr, lang)
}

pub fn expect_premise(entity: usize, attr: Attr, lang: Lang, wrong: &str) -> Expect {
    let mut x = expect_fact(entity, attr, lang);
    x.none_of
        .retain(|v| v != wrong && !wrong.contains(v.as_str()));
    x.correction = true;
    x
}

pub fn expect_unknown() -> Expect {
    Expect {
        ignorance: true,
        ..Expect::default()
    }
}

fn lost_context(lang: Lang) -> String {
    match lang {
        Lang::En => "Which one do you mean?".into(),
        Lang::Zh => "你指的是哪一个？".into(),
    }
}

fn dont_know(lang: Lang) -> String {
    match lang {
        Lang::En => "I don't know.".into(),
        Lang::Zh => "我不知道。".into(),
    }
}

pub fn question(ctx: &mut Ctx, e: usize, attr: Attr, lang: Lang) -> String {
    let en = &world().entities[e];
    let t = ctx
        .template(phrases::QUESTIONS, |q| q.0 == attr && q.1 == lang, |q| q.2)
        .map_or("{e}?", |q| q.3);
    let small = en.small.as_ref().map_or("", |s| s[lang.idx()].as_str());
    capitalize(&render(t, &[("e", name(en, lang)), ("s", small)]))
}

pub fn wrong_answer(ctx: &mut Ctx, e: usize, attr: Attr, lang: Lang) -> Option<String> {
    let en = &world().entities[e];
    let pool = ctx.pool(en.kind, false);
    let v = wrong_value(en, attr, &pool, ctx.rng.random_range(0..1000))?;
    Some(answer_with(en, attr, lang, &v))
}

/// A question about one fact.
pub fn fact(ctx: &mut Ctx, lang: Lang) -> Item {
    let kind = kind_for_fact(ctx.rng, !ctx.heldout);
    let e = ctx.entity(kind);
    let attr = *Attr::of_kind(kind)
        .choose(ctx.rng)
        .unwrap_or(&Attr::Capital);
    let q = question(ctx, e, attr, lang);
    let en = &world().entities[e];
    let mut mistakes: Vec<String> = wrong_answer(ctx, e, attr, lang).into_iter().collect();
    mistakes.push(dont_know(lang));
    Item {
        skill: Skill::Fact,
        lang,
        prompt: vec![Message::user(q)],
        expect: expect_fact(e, attr, lang),
        gold: answer(en, attr, lang),
        mistakes,
        entity: Some(en.name[0].clone()),
    }
}

/// A conversation whose last question ("And its capital?") needs an earlier turn.
pub fn follow_up(ctx: &mut Ctx, lang: Lang) -> Item {
    let kind = kind_for_fact(ctx.rng, false);
    let attrs = Attr::of_kind(kind);
    let (a1, a2) = if attrs.len() >= 2 {
        let i = ctx.rng.random_range(0..attrs.len());
        (
            attrs[i],
            attrs[(i + 1 + ctx.rng.random_range(0..attrs.len() - 1)) % attrs.len()],
        )
    } else {
        (attrs[0], attrs[0])
    };
    let target = ctx.entity(kind);
    let w = world();
    // The entity a lost context answers about must differ in the asked value, or losing
    // the context would go unnoticed.
    let truth = w.entities[target].get(a2);
    let others: Vec<usize> = ctx
        .pool(kind, false)
        .into_iter()
        .filter(|&i| i != target && facts::distinct(w.entities[i].get(a2), truth))
        .collect();
    let other = others.choose(ctx.rng).copied().unwrap_or(target);
    let mut prompt = Vec::new();
    // Two turns ("X's capital?" "And its population?") or three, where the middle turn
    // switches entity ("What about Y?") and the follow-up must track the switch.
    let three = ctx.rng.random_bool(0.5) && other != target;
    let first = if three { other } else { target };
    prompt.push(Message::user(question(ctx, first, a1, lang)));
    prompt.push(Message::assistant(answer(&w.entities[first], a1, lang)));
    if three {
        let t = ctx
            .template(phrases::WHAT_ABOUT, |t| t.0 == lang, |t| t.1)
            .map_or("{e}?", |t| t.2);
        prompt.push(Message::user(capitalize(&render(
            t,
            &[("e", name(&w.entities[target], lang))],
        ))));
        prompt.push(Message::assistant(answer(&w.entities[target], a1, lang)));
    }
    let t = ctx
        .template(phrases::FOLLOW_UPS, |f| f.0 == a2 && f.1 == lang, |f| f.2)
        .map_or("?", |f| f.3);
    prompt.push(Message::user(t));
    let mut mistakes = vec![answer(&w.entities[other], a2, lang), lost_context(lang)];
    if !three {
        mistakes.truncate(1);
        mistakes.push(lost_context(lang));
    }
    Item {
        skill: Skill::FollowUp,
        lang,
        prompt,
        expect: expect_fact(target, a2, lang),
        gold: answer(&w.entities[target], a2, lang),
        mistakes,
        entity: Some(w.entities[target].name[0].clone()),
    }
}

/// A question built on a falsehood, which the answer must correct.
pub fn premise(ctx: &mut Ctx, lang: Lang) -> Item {
    let attr = *[
        Attr::Capital,
        Attr::Capital,
        Attr::Continent,
        Attr::Language,
        Attr::Symbol,
    ]
    .choose(ctx.rng)
    .unwrap_or(&Attr::Capital);
    let e = ctx.entity(attr.kind());
    let w = world();
    let en = &w.entities[e];
    let city = en
        .city
        .as_ref()
        .filter(|_| attr == Attr::Capital && ctx.rng.random_bool(0.7));
    let wrong = match city {
        Some(c) => c[lang.idx()].clone(),
        None => {
            let pool = ctx.pool(en.kind, false);
            let v = wrong_value(en, attr, &pool, ctx.rng.random_range(0..1000));
            v.map(|v| facts::show(&v, lang)).unwrap_or_default()
        }
    };
    let t = ctx
        .template(phrases::PREMISES, |p| p.0 == attr && p.1 == lang, |p| p.2)
        .map_or("{e}", |p| p.3);
    let q = capitalize(&render(t, &[("e", name(en, lang)), ("w", &wrong)]));
    let truth = en
        .get(attr)
        .map(|v| facts::show(v, lang))
        .unwrap_or_default();
    let fill = |table: &[(Attr, Lang, &str)]| {
        let t = table
            .iter()
            .find(|c| c.0 == attr && c.1 == lang)
            .map_or("", |c| c.2);
        capitalize(&render(
            t,
            &[("e", name(en, lang)), ("w", &wrong), ("v", &truth)],
        ))
    };
    Item {
        skill: Skill::FalsePremise,
        lang,
        prompt: vec![Message::user(q)],
        expect: expect_premise(e, attr, lang, &wrong),
        gold: fill(phrases::CORRECTIONS),
        mistakes: vec![fill(phrases::ACCEPTS)],
        entity: Some(en.name[0].clone()),
    }
}

/// A question about something that does not exist.
pub fn unknown(ctx: &mut Ctx, lang: Lang) -> Item {
    let kind = if ctx.rng.random_bool(0.7) {
        Kind::Country
    } else {
        Kind::Element
    };
    let fakes: Vec<[String; 2]> = fake_names(kind)
        .into_iter()
        .filter(|n| fake_is_heldout(ctx.seed, &n[0]) == ctx.heldout)
        .collect();
    let fake = fakes
        .choose(ctx.rng)
        .cloned()
        .unwrap_or_else(|| ["Zorvelania".into(), "佐维尼亚".into()]);
    let attr = *Attr::of_kind(kind)
        .choose(ctx.rng)
        .unwrap_or(&Attr::Capital);
    let t = ctx
        .template(phrases::QUESTIONS, |q| q.0 == attr && q.1 == lang, |q| q.2)
        .map_or("{e}?", |q| q.3);
    let q = capitalize(&render(t, &[("e", &fake[lang.idx()])]));
    let gold_t = phrases::UNKNOWN_ANSWERS
        .iter()
        .find(|u| u.0 == kind && u.1 == lang)
        .map_or("", |u| u.2);
    // A fabrication: a real entity's answer with the made-up name put in its place.
    let pool = ctx.pool(kind, false);
    let real = &world().entities[pool.choose(ctx.rng).copied().unwrap_or(0)];
    let mut fake_ent = real.clone();
    fake_ent.name = fake.clone();
    Item {
        skill: Skill::Unknown,
        lang,
        prompt: vec![Message::user(q)],
        expect: expect_unknown(),
        gold: render(gold_t, &[("e", &fake[lang.idx()])]),
        mistakes: vec![answer(&fake_ent, attr, lang)],
        entity: Some(fake[0].clone()),
    }
}
