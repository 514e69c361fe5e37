//! The generated files: held-out entities and wordings never reach training data, the
//! same seed writes byte-identical files, and the records parse in the shared formats.

use ferrochat_text::{Comparison, Conversation, RankedComparison};
use ferrochat_world::{
    entities_in, generate, heldout_entities, heldout_wordings, EvalItem, WorldConfig,
};
use std::path::Path;

fn small(seed: u64) -> WorldConfig {
    WorldConfig {
        seed,
        pretrain_bytes: 300_000,
        sft_dialogues: 1_500,
        comparisons: 800,
        label_noise: 0.1,
        heldout_per_skill: 20,
        rl_prompts: 300,
    }
}

fn lines<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Vec<T> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every message and answer of the training splits, one string each.
fn training_texts(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["sft.jsonl", "sft_val.jsonl"] {
        for c in lines::<Conversation>(dir, f) {
            out.extend(c.messages.into_iter().map(|m| m.content));
        }
    }
    for f in ["comparisons.jsonl", "comparisons_val.jsonl"] {
        for c in lines::<Comparison>(dir, f) {
            out.extend(c.prompt.into_iter().map(|m| m.content));
            out.extend([c.chosen, c.rejected]);
        }
    }
    for item in lines::<ferrochat_world::EvalItem>(dir, "rl_prompts.jsonl") {
        out.extend(item.messages.into_iter().map(|m| m.content));
    }
    for r in lines::<RankedComparison>(dir, "rankings.jsonl") {
        out.extend(r.prompt.into_iter().map(|m| m.content));
        out.extend(r.ranked);
    }
    out
}

#[test]
fn splits_are_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(11);
    generate(&cfg, dir.path()).unwrap();
    let texts = training_texts(dir.path());
    assert!(texts.len() > 5_000);
    let pretrain = std::fs::read_to_string(dir.path().join("pretrain.txt")).unwrap();

    let held = heldout_entities(cfg.seed);
    let held_en: Vec<&str> = held.iter().map(|n| n[0].as_str()).collect();
    let made_up: Vec<&[String; 2]> = held
        .iter()
        .filter(|n| entities_in(&n[0]).is_empty())
        .collect();
    for t in &texts {
        for e in entities_in(t) {
            assert!(
                !held_en.contains(&e.as_str()),
                "held-out {e} in training text: {t}"
            );
        }
        for n in &made_up {
            // Made-up names are not world entities; look for them literally.
            assert!(
                !t.contains(&n[0]) && !t.contains(&n[1]),
                "held-out {:?} in: {t}",
                n
            );
        }
    }
    // Held-out real entities do appear in pretraining: that is where their facts live.
    let in_pretrain = held_en
        .iter()
        .filter(|e| entities_in(&pretrain).iter().any(|p| p == *e))
        .count();
    assert!(in_pretrain >= 20, "{in_pretrain}");

    for w in heldout_wordings() {
        assert!(
            w.chars().count() >= 4,
            "held-out wording too short to check: {w:?}"
        );
        assert!(
            !pretrain.contains(w),
            "held-out wording {w:?} in pretraining text"
        );
        for t in &texts {
            assert!(
                !t.contains(w),
                "held-out wording {w:?} in training text: {t}"
            );
        }
    }

    let items: Vec<EvalItem> = lines(dir.path(), "heldout.jsonl");
    assert!(items.len() >= 150, "{}", items.len());
    let seen: std::collections::BTreeSet<String> = texts.into_iter().collect();
    for it in &items {
        let q = &it.messages.last().unwrap().content;
        assert!(
            !seen.contains(q) || it.skill == ferrochat_world::Skill::FollowUp,
            "held-out prompt trained on: {q}"
        );
    }
}

#[test]
fn same_seed_same_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let cfg = WorldConfig {
        pretrain_bytes: 100_000,
        sft_dialogues: 300,
        comparisons: 200,
        ..small(5)
    };
    generate(&cfg, a.path()).unwrap();
    generate(&cfg, b.path()).unwrap();
    generate(
        &WorldConfig {
            seed: 6,
            ..cfg.clone()
        },
        c.path(),
    )
    .unwrap();
    for f in [
        "pretrain.txt",
        "sft.jsonl",
        "sft_val.jsonl",
        "comparisons.jsonl",
        "rankings.jsonl",
        "heldout.jsonl",
        "world.json",
    ] {
        let x = std::fs::read(a.path().join(f)).unwrap();
        assert_eq!(
            x,
            std::fs::read(b.path().join(f)).unwrap(),
            "{f} differs between runs"
        );
        if f != "world.json" {
            assert_ne!(
                x,
                std::fs::read(c.path().join(f)).unwrap(),
                "{f} ignores the seed"
            );
        }
    }
}

#[test]
fn records_have_the_promised_shape() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WorldConfig {
        pretrain_bytes: 50_000,
        sft_dialogues: 200,
        comparisons: 200,
        label_noise: 0.0,
        ..small(2)
    };
    let s = generate(&cfg, dir.path()).unwrap();
    assert_eq!(
        (s.sft_dialogues, s.sft_val_dialogues, s.comparisons),
        (200, 50, 200)
    );
    assert!(s.pretrain_bytes >= 50_000 && s.seconds.is_some());
    let pretrain = std::fs::read_to_string(dir.path().join("pretrain.txt")).unwrap();
    assert!(pretrain.contains("\n\n") && pretrain.contains("首都") && pretrain.contains("capital"));
    for r in lines::<RankedComparison>(dir.path(), "rankings.jsonl") {
        assert!((4..=9).contains(&r.ranked.len()));
        // Without label noise, the ranking agrees with the judge, best first.
        let scores: Vec<f64> = r
            .ranked
            .iter()
            .map(|a| ferrochat_world::judge(&r.prompt, a).score)
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] > w[1]),
            "{scores:?} for {:?}",
            r.prompt
        );
    }
    for c in lines::<Comparison>(dir.path(), "comparisons.jsonl") {
        let (x, y) = (
            ferrochat_world::judge(&c.prompt, &c.chosen),
            ferrochat_world::judge(&c.prompt, &c.rejected),
        );
        assert!(
            x.score > y.score,
            "{:?}: {} vs {}",
            c.prompt,
            c.chosen,
            c.rejected
        );
    }
    assert!(generate(
        &WorldConfig {
            label_noise: 2.0,
            ..cfg
        },
        dir.path()
    )
    .is_err());
}

#[test]
fn heldout_wordings_are_checkable() {
    let short: Vec<&str> = heldout_wordings()
        .into_iter()
        .filter(|w| w.chars().count() < 4)
        .collect();
    assert!(short.is_empty(), "{short:?}");
}
