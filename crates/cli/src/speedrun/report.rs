//! The speedrun's `report.md`: what each stage did and how well, in one page.

use ferrochat_eval::{Scorecard, WinRate};
use ferrochat_train::PgSummary;

use super::plan::Plan;
use super::Args;

/// One weight type of the best chat model: its size, judged score and decode speed.
pub struct Compressed {
    pub kind: &'static str,
    pub bytes: u64,
    pub score: f64,
    pub decode_tokens_per_sec: f64,
}

#[derive(Default)]
pub struct Report {
    pub world: Option<String>,
    pub tokenizer: Option<(usize, f64, f64)>,
    pub pretrain: Option<ferrochat_train::PretrainSummary>,
    pub samples: Vec<(String, String)>,
    pub eval_base: Option<Scorecard>,
    pub sft: Option<ferrochat_train::SftSummary>,
    pub eval_sft: Option<Scorecard>,
    pub reward: Option<ferrochat_train::RewardSummary>,
    pub ppo: Option<PgSummary>,
    pub dpo: Option<ferrochat_train::DpoSummary>,
    pub grpo: Option<PgSummary>,
    /// Judged scorecards of the aligned models, by stage name.
    pub aligned: Vec<(&'static str, Scorecard)>,
    /// Each aligned model against the SFT model on the same prompts.
    pub wins: Vec<(&'static str, WinRate)>,
    /// The best model served: `bench serve`'s figures and the model's name.
    pub serve: Option<(String, serde_json::Value)>,
    /// The best model quantized: its name and one row per weight type.
    pub compressed: Option<(String, Vec<Compressed>)>,
    pub times: Vec<(&'static str, f64)>,
    pub total_secs: f64,
}

impl Report {
    pub fn markdown(&self, a: &Args, p: &Plan) -> String {
        let mut s = String::from("# ferrochat speedrun report\n\n");
        s += &format!(
            "Run folder `{}`, seed {}, {} size, {} threads, total {:.0} s.\n\n",
            a.output.display(),
            a.seed,
            if a.quick { "quick" } else { "default" },
            std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
            self.total_secs
        );
        s += "## Stages\n\n| stage | seconds |\n|---|---|\n";
        for (name, secs) in &self.times {
            s += &format!("| {name} | {secs:.1} |\n");
        }
        if let Some(w) = &self.world {
            s += &format!("\n## World\n\n```json\n{}\n```\n", w.trim());
        }
        if let Some((v, en, zh)) = self.tokenizer {
            s += &format!(
                "\n## Tokenizer\n\nByte-level BPE, {v} tokens. Compression: English {en:.2} bytes/token, Chinese {zh:.2} bytes/token.\n"
            );
        }
        if let Some(r) = &self.pretrain {
            s += &format!(
                "\n## Pretraining\n\nPreset `{}` ({:.2}M parameters), {} steps of {} x {} tokens, {} tokens in {:.0} s ({:.0} tokens/s).\n\n\
                 | metric | value |\n|---|---|\n| train loss | {:.3} |\n| val loss | {:.3} |\n| unigram baseline | {:.3} |\n| val bits/byte | {:.3} |\n",
                p.pretrain.preset, r.params as f64 / 1e6, r.steps, p.pretrain.batch, p.pretrain.seq, r.tokens,
                r.elapsed_secs, r.tokens_per_sec, r.train_loss, r.val_loss, r.unigram_loss, r.val_bpb
            );
        }
        if !self.samples.is_empty() {
            s += "\n## Samples of the base model\n\n| prompt | continuation |\n|---|---|\n";
            for (prompt, text) in &self.samples {
                let t = text.replace('|', "\\|").replace('\n', " ");
                s += &format!("| {prompt} | {t} |\n");
            }
        }
        if let Some(r) = &self.sft {
            s += &format!(
                "\n## Supervised fine-tuning\n\n{} dialogues ({} cut to fit the context, {} too long) packed into {} rows of {} tokens \
                 ({:.0}% filled, {:.0}% of positions are answer tokens); {} steps, {} tokens in {:.0} s ({:.0} tokens/s).\n\n\
                 | metric | value |\n|---|---|\n| train loss | {:.3} |\n| answer loss on validation dialogues, before | {:.3} |\n| after | {:.3} |\n",
                r.pack.conversations, r.pack.truncated, r.pack.too_long, r.pack.rows, p.pretrain.seq,
                100.0 * r.pack.fill, 100.0 * r.pack.target_share, r.steps, r.tokens, r.elapsed_secs,
                r.tokens_per_sec, r.train_loss, r.val_loss_before, r.val_loss
            );
        }
        s += "\n## Judged evaluation on held-out prompts\n\nGreedy answers to the world's held-out prompts, scored by its judge (mean score; share of answers passing every skill).\n";
        if let Some(card) = &self.eval_base {
            s += "\n### Base model, prompted with 3 worked examples (GPT-3 style)\n\n";
            s += &card.markdown();
        }
        if let Some(card) = &self.eval_sft {
            s += "\n### Chat model after SFT, asked directly in the chat format\n\n";
            s += &card.markdown();
        }
        s += &self.alignment();
        if let (Some(b), Some(c)) = (&self.eval_base, &self.eval_sft) {
            s += "\n### Every stage, mean judge score per skill\n\n";
            let mut cards: Vec<(&str, &Scorecard)> = vec![("base (3-shot)", b), ("SFT", c)];
            cards.extend(self.aligned.iter().map(|(n, c)| (*n, c)));
            s += &Scorecard::compare_markdown(&cards);
        }
        if !self.wins.is_empty() {
            s += "\n### Against the SFT model, judged answer by answer (InstructGPT-style win rate)\n\n\
                  | model | wins | ties | losses | win rate |\n|---|---|---|---|---|\n";
            for (name, w) in &self.wins {
                s += &format!(
                    "| {name} | {} | {} | {} | {:.1}% |\n",
                    w.wins,
                    w.ties,
                    w.losses,
                    100.0 * w.win_rate
                );
            }
        }
        if let Some((name, r)) = &self.serve {
            s += &format!(
                "\n## Serving\n\nThe best chat model ({name}) behind `ferrochat serve`'s OpenAI API on loopback: {} streaming requests from {} concurrent clients, {} tokens each, served one at a time and then with continuous batching (the server's default):\n\n```\n{}```\n\nContinuous batching serves {:.2}x the requests per second; the median time to the first token is {:.2}x.\n",
                r["requests"], r["clients"], r["max_tokens"], crate::bench_serve::table(r),
                r["speedup_requests_per_sec"].as_f64().unwrap_or(f64::NAN),
                r["ttft_p50_ratio"].as_f64().unwrap_or(f64::NAN),
            );
        }
        if let Some((name, rows)) = &self.compressed {
            s += &format!(
                "\n## Compression\n\nThe best chat model ({name}) with its weight matrices quantized by `ferrochat quantize` (blocks of 32 weights with one scale; llama.cpp runs the same `model.gguf`), judged on the same prompts and decoding greedily at batch 1:\n\n\
                 | weights | size | judged score | decode tokens/s |\n|---|---|---|---|\n"
            );
            for r in rows {
                s += &format!(
                    "| {} | {:.2} MB | {:.3} | {:.0} |\n",
                    r.kind,
                    r.bytes as f64 / 1e6,
                    r.score,
                    r.decode_tokens_per_sec
                );
            }
        }
        s
    }

    /// The reward model, PPO, DPO and GRPO sections.
    fn alignment(&self) -> String {
        let mut s = String::new();
        if let Some(r) = &self.reward {
            s += &format!(
                "\n## Reward model\n\nThe SFT trunk with a scalar head, trained on {} preference records ({} pairs; ranked lists count once with all their pairs) for {} steps in {:.0} s.\n\n\
                 | held-out pairs ({}) | accuracy | loss | calibration error |\n|---|---|---|---|\n\
                 | before (zero head) | {:.1}% | {:.3} | {:.3} |\n| after | {:.1}% | {:.3} | {:.3} |\n",
                r.train.records, r.train.pairs, r.steps, r.elapsed_secs, r.after.pairs,
                100.0 * r.before.accuracy, r.before.loss, r.before.ece,
                100.0 * r.after.accuracy, r.after.loss, r.after.ece
            );
            s += "\nReliability (the model's confidence in the answer it prefers, against how often people preferred it):\n\n| confidence | accuracy | pairs |\n|---|---|---|\n";
            for (c, a, n) in r.after.bins.iter().filter(|b| b.2 > 0) {
                s += &format!("| {c:.2} | {a:.2} | {n} |\n");
            }
        }
        let pg = |name: &str, what: &str, r: &PgSummary| {
            let show = |v: &[(String, f64)]| {
                v.iter()
                    .map(|(k, x)| format!("{k} {x:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut s = format!(
                "\n## {name}\n\n{what} {} iterations ({} updates) in {:.0} s.\n\n\
                 | metric | first iteration | last |\n|---|---|---|\n\
                 | mean rollout reward | {:.3} | {:.3} |\n\
                 | held-out prompts | {} | {} |\n\n\
                 KL to the SFT model at the end: {:.2} nats per answer (coefficient {:.3}); {:.0}% of rollouts ended by themselves.\n",
                r.iterations, r.steps, r.elapsed_secs, r.reward_first, r.reward_last,
                show(&r.monitor_first), show(&r.monitor_last), r.kl_last, r.kl_coef,
                100.0 * r.ended_last
            );
            if r.reward_hacking {
                s += "\n**Warning:** the reward model's score rose while the judged score fell: the policy exploited the reward model.\n";
            }
            s
        };
        if let Some(r) = &self.ppo {
            s += &pg("PPO", "Against the reward model, one answer per prompt, value head and GAE, a per-token KL penalty:", r);
        }
        if let Some(r) = &self.dpo {
            s += &format!(
                "\n## DPO\n\nFrom the same comparisons, reference = the SFT model, {} steps in {:.0} s.\n\n\
                 | held-out pairs ({}) | loss | preference accuracy | reward margin |\n|---|---|---|---|\n\
                 | before | {:.3} | {:.1}% | {:.3} |\n| after | {:.3} | {:.1}% | {:.3} |\n\n\
                 KL to the SFT model: {} nats per answer.\n",
                r.steps, r.elapsed_secs, r.after.pairs, r.before.loss, 100.0 * r.before.accuracy,
                r.before.margin, r.after.loss, 100.0 * r.after.accuracy, r.after.margin,
                r.kl.map(|k| format!("{k:.2}")).unwrap_or_else(|| "-".into())
            );
        }
        if let Some(r) = &self.grpo {
            s += &pg("GRPO", "Against the world's judge (a verifiable reward), answers compared within groups per prompt:", r);
        }
        s
    }
}
