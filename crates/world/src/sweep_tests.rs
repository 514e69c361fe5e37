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
