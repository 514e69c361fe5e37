//! Evaluation plumbing: few-shot prompts, scorecards and win rates over judged answers.

use ferrochat_eval::{few_shot_prompt, win_rate, Judged, PromptStyle, Scorecard};
use ferrochat_world::{heldout, judge_item, Lang, WorldConfig};

fn items() -> Vec<ferrochat_world::EvalItem> {
    heldout(&WorldConfig {
        seed: 5,
        heldout_per_skill: 4,
        ..Default::default()
    })
}

#[test]
fn few_shot_prompt_ends_in_an_open_answer_and_has_k_examples() {
    let items = items();
    let en = items.iter().find(|i| i.lang == Lang::En).unwrap();
    let p = few_shot_prompt(en, &PromptStyle::FewShot { k: 3, seed: 0 });
    assert!(p.ends_with("A:"), "{p}");
    // three examples, then the conversation, each a block of Q/A lines
    let blocks: Vec<&str> = p.split("\n\n").collect();
    assert_eq!(blocks.len(), 4, "{p}");
    for b in &blocks[..3] {
        assert!(b.contains("Q: ") && b.contains("\nA: "), "{b}");
    }
    // the examples are of the item's own skill
    for skill in ferrochat_world::Skill::ALL {
        let Some(it) = items.iter().find(|i| i.skill == skill) else {
            continue;
        };
        let shots = ferrochat_world::few_shot_examples(3, skill, it.lang, 0);
        let p = few_shot_prompt(it, &PromptStyle::FewShot { k: 3, seed: 0 });
        let first_q = shots[0]
            .iter()
            .find(|m| m.role == ferrochat_text::Role::User);
        let first_q = first_q.unwrap().content.replace('\n', " / ");
        assert!(p.contains(first_q.trim()), "{skill:?}: {p}");
    }
    let zh = items.iter().find(|i| i.lang == Lang::Zh).unwrap();
    let p = few_shot_prompt(zh, &PromptStyle::FewShot { k: 2, seed: 0 });
    assert!(p.ends_with("答："), "{p}");
}

#[test]
fn scorecard_and_win_rate_follow_the_judge() {
    let items = items();
    let silent: Vec<Judged> = items
        .iter()
        .map(|i| Judged {
            id: i.id.clone(),
            answer: String::new(),
            verdict: judge_item(i, ""),
            ended: true,
        })
        .collect();
    let card = Scorecard::from_judged(&items, &silent);
    assert_eq!(card.overall.n, items.len());
    assert_eq!(
        card.overall.mean_score, 0.0,
        "empty answers must score zero"
    );
    assert!(card.markdown().contains("| **overall** |"));
    // an answer that repeats the question scores zero too: ties with silence
    let parrot: Vec<Judged> = items
        .iter()
        .map(|i| {
            let q = i.messages.last().unwrap().content.clone();
            Judged {
                id: i.id.clone(),
                verdict: judge_item(i, &q),
                answer: q,
                ended: false,
            }
        })
        .collect();
    let w = win_rate(&parrot, &silent);
    assert_eq!(w.items, items.len());
    assert_eq!(w.wins, 0, "repeating the question must not beat silence");
    assert!(w.win_rate <= 0.5);
}
