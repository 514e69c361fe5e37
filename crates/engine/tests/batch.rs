//! Batched generation against one-by-one generation and full recomputation, on tiny
//! random models.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ferrochat_engine::{
    generate, generate_batch, generate_batch_to, sampler::argmax, Batch, FinishReason,
    GenerateOptions, Generation, SamplingParams,
};
use ferrochat_model::{weights, Config, Llama};

const VOCAB: usize = 64;

fn model(ctx: usize, seed: u64) -> Llama {
    let cfg = Config::preset("tiny", VOCAB, ctx).unwrap();
    let w = weights::init_weights(&cfg, seed, &Device::Cpu).unwrap();
    Llama::new(&cfg, &w, &Device::Cpu).unwrap()
}

/// A prompt of `n` tokens, different for each `salt`.
fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7 + salt * 13 + 1) % VOCAB as u32)
        .collect()
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        seed: 0,
        stop: vec![],
        watermark: None,
    }
}

fn sampled(max_new_tokens: usize, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.02,
            repetition_penalty: 1.2,
        },
        seed,
        stop: vec![],
        watermark: None,
    }
}

fn alone(m: &Llama, p: &[u32], o: &GenerateOptions) -> Generation {
    generate(m, p, o, |_| true).unwrap()
}

/// The last position's logits of `seq`, computed from scratch without a cache.
fn recompute(m: &Llama, seq: &[u32]) -> Vec<f32> {
    let ids = Tensor::new(seq, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let all: Vec<Vec<f32>> = m.forward(&ids).unwrap().to_vec2().unwrap();
    all.last().unwrap().clone()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batched_greedy_generation_equals_one_by_one() {
    let m = model(64, 3);
    let prompts = [prompt(3, 0), prompt(7, 1), prompt(1, 2), prompt(12, 3)];
    let mut opts = vec![greedy(10), greedy(4), greedy(15), greedy(8)];
    // the third sequence stops on the token it would produce third
    let free = alone(&m, &prompts[2], &opts[2]);
    opts[2].stop = vec![free.tokens[2]];
    let first_stop = free
        .tokens
        .iter()
        .position(|&t| t == free.tokens[2])
        .unwrap();
    let mut streamed: Vec<Vec<u32>> = vec![vec![]; prompts.len()];
    let batched = generate_batch(&m, &prompts, &opts, |i, t| {
        streamed[i].push(t);
        true
    })
    .unwrap();
    for (i, (p, o)) in prompts.iter().zip(&opts).enumerate() {
        let one = alone(&m, p, o);
        assert_eq!(batched[i].tokens, one.tokens, "sequence {i}");
        assert_eq!(batched[i].finish, one.finish, "sequence {i}");
        assert_eq!(streamed[i], one.tokens, "sequence {i}");
    }
    let lens: Vec<usize> = batched.iter().map(|g| g.tokens.len()).collect();
    assert_eq!(lens, vec![10, 4, first_stop + 1, 8]);
    assert_eq!(batched[2].finish, FinishReason::Stop);
    assert!(batched[2].stopped);
    assert_eq!(batched[0].finish, FinishReason::Length);
}

#[test]
fn batched_decode_step_logits_equal_a_full_recompute() {
    let m = model(64, 4);
    let mut seqs = [prompt(3, 0), prompt(7, 1), prompt(1, 2), prompt(12, 3)];
    let mut caches: Vec<_> = seqs.iter().map(|_| m.new_cache()).collect();
    let mut next = Vec::new();
    for (s, c) in seqs.iter().zip(caches.iter_mut()) {
        let ids = Tensor::new(s.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let l: Vec<f32> = m
            .forward_cached(&ids, c)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(max_diff(&l, &recompute(&m, s)) < 1e-4);
        next.push(argmax(&l));
    }
    for step in 0..6 {
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let logits: Vec<Vec<f32>> = m.decode_step(&next, &mut refs).unwrap().to_vec2().unwrap();
        for (i, s) in seqs.iter_mut().enumerate() {
            s.push(next[i]);
            let d = max_diff(&logits[i], &recompute(&m, s));
            assert!(d < 1e-4, "step {step}, sequence {i}: {d}");
            assert_eq!(caches[i].len(), s.len());
            next[i] = argmax(&logits[i]);
        }
    }
}

#[test]
fn cache_grows_past_its_first_chunk() {
    // the cache starts with 256 positions: one prompt crosses that in its prefill,
    // the other while decoding
    let m = model(320, 5);
    let mut seqs = [prompt(300, 0), prompt(250, 1)];
    let mut caches: Vec<_> = seqs.iter().map(|_| m.new_cache()).collect();
    for (s, c) in seqs.iter().zip(caches.iter_mut()) {
        let ids = Tensor::new(s.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        m.forward_cached(&ids, c).unwrap();
    }
    for step in 0..10u32 {
        let next = [step % VOCAB as u32, (step * 5) % VOCAB as u32];
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let logits: Vec<Vec<f32>> = m.decode_step(&next, &mut refs).unwrap().to_vec2().unwrap();
        for (i, s) in seqs.iter_mut().enumerate() {
            s.push(next[i]);
            if step % 3 == 2 || step == 9 {
                let d = max_diff(&logits[i], &recompute(&m, s));
                assert!(d < 1e-4, "step {step}, sequence {i}: {d}");
            }
        }
    }
}

#[test]
fn sequences_joining_midway_equal_running_alone() {
    let m = model(64, 6);
    let reqs = [
        (prompt(5, 0), greedy(12)),
        (prompt(9, 1), sampled(9, 21)),
        (prompt(2, 2), greedy(6)),
        (prompt(11, 3), sampled(7, 22)),
    ];
    // join after 0, 3, 3 and 5 steps
    let joins = [0usize, 3, 3, 5];
    let mut batch = Batch::new(&m);
    let mut ids = HashMap::new();
    let mut got: Vec<Vec<u32>> = vec![vec![]; reqs.len()];
    let mut finish = vec![None; reqs.len()];
    let mut steps = 0;
    loop {
        for (i, (p, o)) in reqs.iter().enumerate() {
            if joins[i] == steps {
                ids.insert(batch.add(p, o).unwrap(), i);
            }
        }
        if batch.is_empty() && steps > *joins.iter().max().unwrap() {
            break;
        }
        let in_flight = batch.len();
        let events = batch.step().unwrap();
        assert_eq!(events.len(), in_flight, "one token for each sequence");
        for e in events {
            let i = ids[&e.id];
            got[i].push(e.token);
            if e.finish.is_some() {
                finish[i] = e.finish;
                assert!(!batch.contains(e.id), "a finished sequence leaves at once");
            }
        }
        steps += 1;
    }
    for (i, (p, o)) in reqs.iter().enumerate() {
        let one = alone(&m, p, o);
        assert_eq!(got[i], one.tokens, "sequence {i}");
        assert_eq!(finish[i], Some(one.finish), "sequence {i}");
    }
}

#[test]
fn seeded_sampling_in_a_batch_equals_the_same_seed_alone() {
    let m = model(64, 7);
    let prompts = [prompt(4, 0), prompt(10, 1), prompt(4, 0), prompt(6, 2)];
    let opts = [
        sampled(20, 1),
        sampled(20, 2),
        sampled(20, 3),
        sampled(15, 1),
    ];
    let batched = generate_batch(&m, &prompts, &opts, |_, _| true).unwrap();
    for (i, (p, o)) in prompts.iter().zip(&opts).enumerate() {
        assert_eq!(batched[i].tokens, alone(&m, p, o).tokens, "sequence {i}");
    }
    assert_ne!(
        batched[0].tokens, batched[2].tokens,
        "the same prompt with another seed should differ"
    );
    let again = generate_batch(&m, &prompts, &opts, |_, _| true).unwrap();
    for (a, b) in batched.iter().zip(&again) {
        assert_eq!(a.tokens, b.tokens);
    }
}

#[test]
fn cancelling_ends_only_that_sequence() {
    let m = model(64, 8);
    let prompts = [prompt(3, 0), prompt(5, 1), prompt(2, 2)];
    let opts = [greedy(10)];
    let g = generate_batch(&m, &prompts, &opts, |i, _| i != 1).unwrap();
    assert_eq!(g[1].tokens.len(), 1);
    assert_eq!(g[1].finish, FinishReason::Cancelled);
    for i in [0, 2] {
        assert_eq!(g[i].tokens, alone(&m, &prompts[i], &opts[0]).tokens);
        assert_eq!(g[i].finish, FinishReason::Length);
    }
    // the step-level cancel
    let mut b = Batch::new(&m);
    let a = b.add(&prompts[0], &opts[0]).unwrap();
    let c = b.add(&prompts[1], &opts[0]).unwrap();
    b.step().unwrap();
    b.step().unwrap();
    assert_eq!(b.generated(c).map(|t| t.len()), Some(2));
    assert!(b.cancel(c));
    assert!(!b.cancel(c));
    assert_eq!(b.ids(), vec![a]);
    let e = b.step().unwrap();
    assert_eq!((e.len(), e[0].id), (1, a));
}

#[test]
fn the_channel_streams_what_the_callback_sees() {
    let m = model(64, 9);
    let prompts = [prompt(3, 0), prompt(8, 1)];
    let opts = [greedy(6), sampled(9, 4)];
    let (tx, rx) = std::sync::mpsc::channel();
    let (g, streamed) = std::thread::scope(|s| {
        let h = s.spawn(|| generate_batch_to(&m, &prompts, &opts, tx).unwrap());
        let mut streamed: Vec<Vec<u32>> = vec![vec![]; 2];
        for (i, t) in rx {
            streamed[i].push(t);
        }
        (h.join().unwrap(), streamed)
    });
    for i in 0..2 {
        assert_eq!(streamed[i], g[i].tokens);
        assert_eq!(g[i].tokens, alone(&m, &prompts[i], &opts[i]).tokens);
    }
}

#[test]
fn bad_requests_are_refused_and_full_prompts_get_nothing() {
    let m = model(16, 10);
    let mut b = Batch::new(&m);
    let err = |r: ferrochat_model::Result<u64>| r.unwrap_err().to_string();
    assert!(err(b.add(&[], &greedy(3))).contains("empty prompt"));
    assert!(err(b.add(&[1, 2], &greedy(0))).contains("max_new_tokens"));
    assert!(err(b.add(&prompt(16, 0), &greedy(3))).contains("no room"));
    assert!(err(b.add(&[1, VOCAB as u32], &greedy(3))).contains("vocabulary"));
    let mut o = greedy(3);
    o.sampling.top_p = 0.0;
    assert!(err(b.add(&[1, 2], &o)).contains("top_p"));
    assert!(b.is_empty());
    // generate_batch: no room means an empty generation, not an error
    let g = generate_batch(&m, &[prompt(16, 0), prompt(4, 1)], &[greedy(3)], |_, _| {
        true
    })
    .unwrap();
    assert!(g[0].tokens.is_empty());
    assert_eq!(g[1].tokens.len(), 3);
    assert!(generate_batch(&m, &[prompt(2, 0)], &[greedy(1), greedy(1)], |_, _| true).is_err());
    // the context caps max_new_tokens: 16 - 13 = 3 new tokens
    let g = generate(&m, &prompt(13, 2), &greedy(100), |_| true).unwrap();
    assert_eq!((g.tokens.len(), g.finish), (3, FinishReason::Length));
}
