//! Whole-world checks over many generated items: every gold answer passes the judge with
//! full marks, every planted mistake fails its skill, and judging from the conversation
//! text alone holds an answer to exactly what the item was generated with.

use crate::dataset::{build, stream};
use crate::items::Ctx;
use crate::judge::{judge, judge_expect};
use crate::recognise::recognise;
use crate::tables::heldout_entities;
use crate::types::{Lang, Skill};

fn sweep(heldout: bool) {
    let seed = 3;
    let held = heldout_entities(seed);
    let mut rng = stream(seed, 99);
    for skill in Skill::ALL {
        for i in 0..150 {
            let lang = Lang::ALL[i % 2];
            let mut ctx = Ctx {
                rng: &mut rng,
                seed,
                heldout,
                held: &held,
            };
            let item = build(skill, &mut ctx, lang);
            let v = judge_expect(skill, lang, &item.prompt, &item.expect, &item.gold);
            assert!(
                v.passed() && v.score == 1.0,
                "gold fails: {:?}\n{}\n{:#?}",
                item.prompt,
                item.gold,
                v
            );
            for m in &item.mistakes {
                let v = judge_expect(skill, lang, &item.prompt, &item.expect, m);
                assert!(
                    !v.passed() && v.score <= 0.3,
                    "mistake passes: {:?}\n{m}\n{:#?}",
                    item.prompt,
                    v
                );
            }
            let found = recognise(&item.prompt)
                .unwrap_or_else(|| panic!("not recognised: {:?}", item.prompt));
            assert_eq!(found.skill, skill, "{:?}", item.prompt);
            assert_eq!(found.expect, item.expect, "{:?}", item.prompt);
            assert_eq!(judge(&item.prompt, &item.gold).score, 1.0);
        }
    }
}

#[test]
fn every_training_item_is_judged_as_generated() {
    sweep(false);
}

#[test]
fn every_heldout_item_is_judged_as_generated() {
    sweep(true);
}

/// The SFT dialogues' rewording keeps every answer right: the gold answer still passes
/// under the reworded question and the mistakes still fail; a reworded harmful request
/// names its act in the dialogue's language; and it rewords a fair share of them.
#[test]
fn reworded_sft_dialogues_are_judged_as_generated() {
    let seed = 5;
    let items = crate::dataset::training_items(seed, 2, 600);
    let mut reworded = crate::dataset::training_items(seed, 2, 600);
    crate::dataset::vary_wording(&mut reworded, seed);
    let mut changed = 0;
    let mut benign_acts = 0;
    for (before, item) in items.iter().zip(&reworded) {
        assert_eq!((before.skill, &before.gold), (item.skill, &item.gold));
        let (q0, q1) = (
            &before.prompt.last().unwrap().content,
            &item.prompt.last().unwrap().content,
        );
        if q0 == q1 {
            continue;
        }
        changed += 1;
        assert_ne!(
            item.skill,
            Skill::SmallTalk,
            "small talk is asked as generated"
        );
        if item.skill == Skill::Benign && !q1.contains(q0.as_str()) {
            let act_named = crate::talk::look_alikes()
                .filter_map(|c| c.act)
                .any(|a| q1.contains(item.lang.of(a)));
            assert!(act_named, "{q0} -> {q1}");
            benign_acts += 1;
        } else if item.skill == Skill::Refusal {
            let act_named = crate::talk::HARMFUL
                .iter()
                .map(|h| h.3)
                .any(|a| q1.contains(item.lang.of(a)));
            assert!(act_named || q1.contains(q0.as_str()), "{q0} -> {q1}");
        } else {
            assert!(
                q1.contains(q0.as_str()),
                "only an opening or closing: {q0} -> {q1}"
            );
        }
        let v = judge_expect(
            item.skill,
            item.lang,
            &item.prompt,
            &item.expect,
            &item.gold,
        );
        assert!(
            v.passed() && v.score == 1.0,
            "gold fails after rewording: {q1}\n{v:#?}"
        );
        for m in &item.mistakes {
            let v = judge_expect(item.skill, item.lang, &item.prompt, &item.expect, m);
            assert!(!v.passed() && v.score <= 0.3, "mistake passes: {q1}\n{m}");
        }
    }
    assert!(
        (150..=300).contains(&changed),
        "{changed} of 600 questions reworded"
    );
    assert!(benign_acts > 0, "no look-alike request asked for its act");
}
