//! Turning items into the records each training stage reads: SFT dialogues, pairwise
//! comparisons and ranked lists labelled by the judge (with optional label noise), the
//! held-out evaluation set and few-shot examples.

use crate::items::{self, Ctx, Item};
use crate::items_more;
use crate::items_tone;
use crate::judge::judge_expect;
use crate::style::{ramble, rude};
use crate::tables::heldout_entities;
use crate::talk::{self, REFUSAL};
use crate::types::{EvalItem, Lang, Skill};
use ferrochat_text::{Comparison, Conversation, Message, RankedComparison, Role};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Share of each skill in training data, in percent. False premises had 8 and facts 22:
/// with the longer pretraining the chat model then answered most false premises with the
/// plain fact (0.35 judged against the base model's 0.32, three seeds); at 11 it corrects
/// them more often (0.39) and tone rises with it (0.37 -> 0.42), facts 0.59 -> 0.55.
const MIX: [(Skill, u32); 11] = [
    (Skill::SmallTalk, 6),
    (Skill::Fact, 19),
    (Skill::FollowUp, 12),
    (Skill::FalsePremise, 11),
    (Skill::Refusal, 6),
    (Skill::Benign, 6),
    (Skill::Poem, 8),
    (Skill::Code, 6),
    (Skill::Arithmetic, 12),
    (Skill::Unknown, 7),
    (Skill::Tone, 7),
];

/// An independent random stream per output, so adding dialogues never changes comparisons.
pub fn stream(seed: u64, part: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ part.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

pub fn build(skill: Skill, ctx: &mut Ctx, lang: Lang) -> Item {
    match skill {
        Skill::SmallTalk => items_more::small_talk(ctx, lang),
        Skill::Fact => items::fact(ctx, lang),
        Skill::FollowUp => items::follow_up(ctx, lang),
        Skill::FalsePremise => items::premise(ctx, lang),
        Skill::Refusal => items_more::refusal(ctx, lang),
        Skill::Benign => items_more::benign(ctx, lang),
        Skill::Poem => items_more::poem(ctx, lang),
        Skill::Code => items_more::code(ctx, lang),
        Skill::Arithmetic => items_more::arithmetic(ctx, lang),
        Skill::Unknown => items::unknown(ctx, lang),
        Skill::Tone => items_tone::tone(ctx, lang),
    }
}

fn random_skill(rng: &mut ChaCha8Rng) -> Skill {
    let mut r = rng.random_range(0..100u32);
    for (s, w) in MIX {
        if r < w {
            return s;
        }
        r -= w;
    }
    Skill::Fact
}

/// `n` training items drawn from the skill mix, languages alternating.
pub fn training_items(seed: u64, part: u64, n: usize) -> Vec<Item> {
    let held = heldout_entities(seed);
    let mut rng = stream(seed, part);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let skill = random_skill(&mut rng);
        let lang = Lang::ALL[i % 2];
        let mut ctx = Ctx {
            rng: &mut rng,
            seed,
            heldout: false,
            held: &held,
        };
        out.push(build(skill, &mut ctx, lang));
    }
    out
}

pub fn dialogue(item: &Item) -> Conversation {
    let mut m = item.prompt.clone();
    m.push(Message::assistant(item.gold.clone()));
    Conversation::new(m)
}

/// A dialogue as `sft.jsonl` holds it: the messages, and the skill and language it
/// exercises (readers of the chat format ignore the two; they let a user pick a skill).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LabelledDialogue {
    pub skill: Skill,
    pub lang: Lang,
    pub messages: Vec<Message>,
}

pub fn labelled_dialogue(item: &Item) -> LabelledDialogue {
    LabelledDialogue {
        skill: item.skill,
        lang: item.lang,
        messages: dialogue(item).messages,
    }
}

/// Candidate answers to an item with the judge's score, one per distinct score, best first.
/// `off_topic` is a good answer to another question: fluent and polite but beside the
/// point, which labellers rank below an answer to the question asked.
fn graded(item: &Item, off_topic: &str, rng: &mut ChaCha8Rng) -> Vec<(f64, String)> {
    let mut cands = Vec::new();
    if off_topic != item.gold {
        cands.push(off_topic.to_string());
    }
    for base in std::iter::once(&item.gold).chain(item.mistakes.iter().take(2)) {
        let long = ramble(base, item.lang, item.skill);
        cands.extend([
            base.clone(),
            rude(base, item.lang),
            rude(&long, item.lang),
            long,
        ]);
    }
    if let Some(q) = item.prompt.last() {
        cands.push(q.content.clone());
    }
    if item.skill != Skill::Refusal {
        cands.push(REFUSAL[item.lang.idx()].to_string());
    }
    let mut scored: Vec<(i64, f64, String)> = cands
        .into_iter()
        .map(|a| {
            let v = judge_expect(item.skill, item.lang, &item.prompt, &item.expect, &a);
            ((v.score * 1000.0).round() as i64, v.score, a)
        })
        .collect();
    scored.shuffle(rng);
    // Stable sort after a shuffle: a random representative of each score level.
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.dedup_by(|a, b| a.0 == b.0);
    scored.into_iter().map(|(_, s, a)| (s, a)).collect()
}

/// Pairwise comparisons: the judge prefers one answer; `noise` of pairs are flipped.
pub fn comparisons(seed: u64, n: usize, noise: f64) -> Vec<Comparison> {
    comparisons_from(seed, (4, 5), n, noise)
}

/// Comparisons for validating a reward model: other items than [`comparisons`], and
/// labelled without noise, so accuracy is measured against the judge itself.
pub fn comparisons_val(seed: u64, n: usize) -> Vec<Comparison> {
    comparisons_from(seed, (10, 11), n, 0.0)
}

fn comparisons_from(seed: u64, parts: (u64, u64), n: usize, noise: f64) -> Vec<Comparison> {
    let items = training_items(seed, parts.0, n);
    let mut rng = stream(seed, parts.1);
    let mut out = Vec::with_capacity(n);
    for item in &items {
        let other = &items[rng.random_range(0..items.len())].gold;
        let levels = graded(item, other, &mut rng);
        if levels.len() < 2 {
            continue;
        }
        // Half the pairs pit the best answer against a mistake; the rest are any two levels.
        let i = if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(0..levels.len() - 1)
        };
        let j = rng.random_range(i + 1..levels.len());
        let (mut chosen, mut rejected) = (levels[i].1.clone(), levels[j].1.clone());
        if rng.random_bool(noise.clamp(0.0, 1.0)) {
            std::mem::swap(&mut chosen, &mut rejected);
        }
        out.push(Comparison {
            prompt: item.prompt.clone(),
            chosen,
            rejected,
        });
    }
    out
}

/// Ranked lists of 4 to 9 answers, best first by the judge. With probability `noise` one
/// adjacent pair is swapped, as a labeller might.
pub fn rankings(seed: u64, n: usize, noise: f64) -> Vec<RankedComparison> {
    let items = training_items(seed, 6, n);
    let mut rng = stream(seed, 7);
    let mut out = Vec::with_capacity(n);
    for item in &items {
        let other = &items[rng.random_range(0..items.len())].gold;
        let levels = graded(item, other, &mut rng);
        if levels.len() < 4 {
            continue;
        }
        let k = rng.random_range(4..=9).min(levels.len());
        let mut keep: Vec<usize> = (0..levels.len()).collect();
        keep.shuffle(&mut rng);
        keep.truncate(k);
        keep.sort();
        let mut ranked: Vec<String> = keep.iter().map(|&i| levels[i].1.clone()).collect();
        if rng.random_bool(noise.clamp(0.0, 1.0)) {
            let i = rng.random_range(0..ranked.len() - 1);
            ranked.swap(i, i + 1);
        }
        out.push(RankedComparison {
            prompt: item.prompt.clone(),
            ranked,
        });
    }
    out
}

/// Prompts for reinforcement learning, with what the judge expects of each answer (so a
/// verifiable reward can be computed): training items, not held-out ones.
pub fn rl_prompts(seed: u64, n: usize) -> Vec<EvalItem> {
    training_items(seed, 12, n)
        .into_iter()
        .enumerate()
        .map(|(i, item)| EvalItem {
            id: format!("rl-{}-{}-{i:05}", item.skill.as_str(), item.lang.as_str()),
            skill: item.skill,
            lang: item.lang,
            messages: item.prompt,
            entity: item.entity,
            expect: item.expect,
        })
        .collect()
}

/// Held-out evaluation items: `per_skill` distinct prompts per skill (fewer when the
/// skill has fewer held-out prompts), languages alternating.
pub fn heldout(seed: u64, per_skill: usize) -> Vec<EvalItem> {
    let held = heldout_entities(seed);
    let mut out = Vec::new();
    for skill in Skill::ALL {
        // a stream per skill: a skill that gains or loses prompts leaves the others' alone
        let mut rng = stream(seed, 8 ^ ((skill as u64 + 1) << 24));
        let mut seen: Vec<Vec<Message>> = Vec::new();
        let mut tries = 0;
        while seen.len() < per_skill && tries < per_skill * 30 {
            tries += 1;
            let lang = Lang::ALL[seen.len() % 2];
            let mut ctx = Ctx {
                rng: &mut rng,
                seed,
                heldout: true,
                held: &held,
            };
            let item = build(skill, &mut ctx, lang);
            if seen.contains(&item.prompt) {
                continue;
            }
            seen.push(item.prompt.clone());
            out.push(EvalItem {
                id: format!("{}-{}-{:04}", skill.as_str(), lang.as_str(), seen.len() - 1),
                skill,
                lang,
                messages: item.prompt,
                entity: item.entity,
                expect: item.expect,
            });
        }
    }
    out
}

/// `k` distinct training conversations of `skill`, each ending in its gold answer, for
/// prompting a base model the GPT-3 way before it has learned to chat.
pub fn few_shot_examples(k: usize, skill: Skill, lang: Lang, seed: u64) -> Vec<Vec<Message>> {
    let held = heldout_entities(seed);
    let mut rng = stream(
        seed,
        9 ^ ((skill as u64) << 8) ^ ((lang.idx() as u64) << 16),
    );
    let mut out: Vec<Vec<Message>> = Vec::with_capacity(k);
    let mut tries = 0;
    while out.len() < k && tries < k * 20 + 20 {
        tries += 1;
        let mut ctx = Ctx {
            rng: &mut rng,
            seed,
            heldout: false,
            held: &held,
        };
        let item = build(skill, &mut ctx, lang);
        if !out.iter().any(|x| x[..x.len() - 1] == item.prompt[..]) {
            out.push(dialogue(&item).messages);
        }
    }
    out
}

/// Varies how SFT dialogues ask, on a stream of its own (the dialogues themselves are
/// unchanged): half the training refusals and look-alike requests ask for their act
/// through one of the same sentences ([`talk::ASKS`]), and a third of all questions but
/// small talk get an opening or closing ([`talk::ASIDES`]). Without this each request
/// kind came in a handful of fixed sentences, and a 4M-parameter model learned to refuse
/// whatever was worded unlike them: poems and sums asked in new words among it.
pub fn vary_wording(items: &mut [Item], seed: u64) {
    let mut rng = stream(seed, 13);
    for item in items.iter_mut() {
        let l = item.lang.idx();
        let Some(q) = item.prompt.iter_mut().rev().find(|m| m.role == Role::User) else {
            continue;
        };
        if matches!(item.skill, Skill::Refusal | Skill::Benign) && rng.random_bool(0.5) {
            let act = if item.skill == Skill::Refusal {
                talk::HARMFUL
                    .iter()
                    .find(|h| h.0 == q.content || h.1 == q.content)
                    .map(|h| h.3)
            } else {
                talk::look_alikes()
                    .find(|c| c.en.0 == q.content || c.zh.0 == q.content)
                    .and_then(|c| c.act)
            };
            if let (Some(act), Some(ask)) = (act, talk::ASKS[l].choose(&mut rng)) {
                q.content = ask.replace("{a}", item.lang.of(act));
            }
        }
        if item.skill != Skill::SmallTalk && rng.random_bool(1.0 / 3.0) {
            if let Some((open, close)) = talk::ASIDES[l].choose(&mut rng) {
                q.content = format!("{open}{}{close}", q.content);
            }
        }
    }
}
