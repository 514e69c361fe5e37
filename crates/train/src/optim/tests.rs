//! AdamW against a plain f64 transcription of the formula, the parameter groups, the
//! composite path against the fused one, exact resume, and gradient clipping.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{clip_grad_norm, AdamW, AdamWConfig};

fn values(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn param(name: &str, data: Vec<f32>, shape: &[usize], dtype: DType) -> Result<(String, Var)> {
    let t = Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?;
    Ok((name.to_string(), Var::from_tensor(&t)?))
}

fn flat(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()
}

/// Random gradients for `params`, the same for the same seed.
fn grads_for(params: &[(String, Var)], seed: u64, skip: Option<&str>) -> Result<GradStore> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut grads = GradStore::default();
    for (name, var) in params {
        let g = Tensor::from_vec(
            values(&mut rng, var.elem_count()),
            var.shape(),
            &Device::Cpu,
        )?;
        if Some(name.as_str()) != skip {
            grads.insert(var, g.to_dtype(var.dtype())?);
        }
    }
    Ok(grads)
}

/// AdamW as written in the paper / PyTorch docs, in f64.
struct Reference {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Reference {
    fn step(&mut self, g: &[f64], lr: f64, c: &AdamWConfig, decay: bool) {
        self.t += 1;
        let (bc1, bc2) = (1.0 - c.beta1.powi(self.t), 1.0 - c.beta2.powi(self.t));
        let state = self.p.iter_mut().zip(&mut self.m).zip(&mut self.v);
        for (((p, m), v), &g) in state.zip(g) {
            if decay {
                *p *= 1.0 - lr * c.weight_decay;
            }
            *m = c.beta1 * *m + (1.0 - c.beta1) * g;
            *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
            *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + c.eps);
        }
    }
}

#[test]
fn matches_reference_formula() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let params = vec![
        param(
            "layers.0.mlp.up_proj.weight",
            values(&mut rng, 15),
            &[3, 5],
            DType::F32,
        )?,
        param(
            "layers.0.input_layernorm.weight",
            values(&mut rng, 5),
            &[5],
            DType::F32,
        )?,
    ];
    let config = AdamWConfig {
        weight_decay: 0.3,
        ..Default::default()
    };
    let mut opt = AdamW::new(params.clone(), config)?;
    let mut refs: Vec<Reference> = params
        .iter()
        .map(|(_, v)| {
            let p = flat(v.as_tensor())?;
            let n = p.len();
            Ok(Reference {
                p,
                m: vec![0.0; n],
                v: vec![0.0; n],
                t: 0,
            })
        })
        .collect::<Result<_>>()?;
    for step in 0..6 {
        let lr = 1e-2 * (1.0 + step as f64);
        let grads = grads_for(&params, 10 + step, None)?;
        opt.step(&grads, lr)?;
        for (i, ((_, var), r)) in params.iter().zip(&mut refs).enumerate() {
            let g = flat(grads.get(var).expect("inserted above"))?;
            r.step(&g, lr, &config, i == 0);
            let got = flat(var.as_tensor())?;
            for (a, b) in got.iter().zip(&r.p) {
                assert!(
                    (a - b).abs() < 2e-6,
                    "step {step}, param {i}: {a} vs reference {b}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn norms_embeddings_and_vectors_are_not_decayed() -> Result<()> {
    let names = [
        ("model.embed_tokens.weight", vec![4, 3]),
        ("model.layers.0.post_attention_layernorm.weight", vec![3]),
        ("model.norm.weight", vec![3]),
        ("score.bias", vec![3]),
        ("model.layers.0.self_attn.q_proj.weight", vec![3, 3]),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let params: Vec<(String, Var)> = names
        .iter()
        .map(|(n, s)| param(n, values(&mut rng, s.iter().product()), s, DType::F32))
        .collect::<Result<_>>()?;
    let before: Vec<Vec<f64>> = params
        .iter()
        .map(|(_, v)| flat(v.as_tensor()))
        .collect::<Result<_>>()?;
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    assert_eq!(
        opt.decayed(),
        vec!["model.layers.0.self_attn.q_proj.weight"]
    );
    // A zero gradient leaves only the decay: p * (1 - lr * wd).
    let mut grads = GradStore::default();
    for (_, v) in &params {
        grads.insert(v, v.zeros_like()?);
    }
    opt.step(&grads, 0.5)?;
    for (i, (name, var)) in params.iter().enumerate() {
        let factor = if i == 4 { 1.0 - 0.5 * 0.1 } else { 1.0 };
        for (a, b) in flat(var.as_tensor())?.iter().zip(&before[i]) {
            assert!(
                (a - b * factor).abs() < 1e-6,
                "{name}: {a} vs {}",
                b * factor
            );
        }
    }
    Ok(())
}

#[test]
fn composite_path_matches_fused() -> Result<()> {
    // f64 parameters are not fused, so they take the tensor-op path.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (w, n) = (values(&mut rng, 12), values(&mut rng, 4));
    let make = |dtype| -> Result<Vec<(String, Var)>> {
        Ok(vec![
            param("proj.weight", w.clone(), &[3, 4], dtype)?,
            param("norm.weight", n.clone(), &[4], dtype)?,
        ])
    };
    let (fused, composite) = (make(DType::F32)?, make(DType::F64)?);
    let mut a = AdamW::new(fused.clone(), AdamWConfig::default())?;
    let mut b = AdamW::new(composite.clone(), AdamWConfig::default())?;
    for step in 0..4 {
        a.step(&grads_for(&fused, step, None)?, 3e-2)?;
        b.step(&grads_for(&composite, step, None)?, 3e-2)?;
    }
    for ((_, x), (_, y)) in fused.iter().zip(&composite) {
        for (p, q) in flat(x.as_tensor())?.iter().zip(flat(y.as_tensor())?) {
            assert!((p - q).abs() < 1e-6, "fused {p} vs composite {q}");
        }
    }
    Ok(())
}

#[test]
fn resumed_optimizer_continues_bit_for_bit() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (w, n) = (values(&mut rng, 35), values(&mut rng, 7));
    let make = || -> Result<Vec<(String, Var)>> {
        Ok(vec![
            param("a.weight", w.clone(), &[5, 7], DType::F32)?,
            param("a.norm", n.clone(), &[7], DType::F32)?,
        ])
    };
    let unbroken = make()?;
    let mut a = AdamW::new(unbroken.clone(), AdamWConfig::default())?;
    // "a.norm" misses a gradient once, so its step count differs from the global one.
    for step in 0..3 {
        let skip = (step == 1).then_some("a.norm");
        a.step(&grads_for(&unbroken, step, skip)?, 1e-2)?;
    }
    // Save through a real safetensors file, as a checkpoint does.
    let dir = tempfile::tempdir().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let path = dir.path().join("trainer.safetensors");
    let state: HashMap<String, Tensor> = a.state()?.into_iter().collect();
    candle_core::safetensors::save(&state, &path)?;
    let loaded = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let resumed = make()?;
    for ((_, r), (_, u)) in resumed.iter().zip(&unbroken) {
        r.set(u.as_tensor())?;
    }
    let mut b = AdamW::new(resumed.clone(), AdamWConfig::default())?;
    b.load_state(&loaded)?;
    assert_eq!(b.step_count(), 3);
    for step in 3..5 {
        a.step(&grads_for(&unbroken, step, None)?, 1e-2)?;
        b.step(&grads_for(&resumed, step, None)?, 1e-2)?;
    }
    for ((name, r), (_, u)) in resumed.iter().zip(&unbroken) {
        let (r, u): (Vec<f32>, Vec<f32>) =
            (r.flatten_all()?.to_vec1()?, u.flatten_all()?.to_vec1()?);
        assert!(
            r.iter().zip(&u).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} diverged"
        );
    }
    Ok(())
}

#[test]
fn load_state_names_the_bad_entry() -> Result<()> {
    let params = vec![param("w", vec![0.0; 6], &[2, 3], DType::F32)?];
    let mut opt = AdamW::new(params, AdamWConfig::default())?;
    let good: HashMap<String, Tensor> = opt.state()?.into_iter().collect();

    let mut missing = good.clone();
    missing.remove("v.w");
    let err = opt
        .load_state(&missing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("`v.w`"), "{err}");

    let mut bad_shape = good.clone();
    bad_shape.insert(
        "m.w".into(),
        Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?,
    );
    let err = opt
        .load_state(&bad_shape)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("`m.w`") && err.contains("[3, 2]"), "{err}");

    let mut no_step = good.clone();
    no_step.remove("step");
    assert!(opt.load_state(&no_step).is_err());
    opt.load_state(&good)
}

#[test]
fn parameters_without_gradient_are_left_alone() -> Result<()> {
    let params = vec![
        param("w", vec![1.0; 4], &[2, 2], DType::F32)?,
        param("u", vec![1.0; 4], &[2, 2], DType::F32)?,
    ];
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    opt.step(&grads_for(&params, 0, Some("u"))?, 0.1)?;
    assert_eq!(flat(params[1].1.as_tensor())?, vec![1.0; 4]);
    assert_ne!(flat(params[0].1.as_tensor())?, vec![1.0; 4]);
    Ok(())
}

#[test]
fn clip_grad_norm_scales_to_the_limit() -> Result<()> {
    let params = vec![
        param("a", vec![0.0; 2], &[2], DType::F32)?,
        param("b", vec![0.0; 1], &[1], DType::F32)?,
        // not fused: summed by tensor ops, the sums added before one read back
        param("c", vec![0.0; 1], &[1], DType::F64)?,
        param("d", vec![0.0; 1], &[1], DType::F64)?,
    ];
    let set = |vals: [&[f64]; 4]| -> Result<GradStore> {
        let mut g = GradStore::default();
        for ((_, v), x) in params.iter().zip(vals) {
            g.insert(v, Tensor::new(x, &Device::Cpu)?.to_dtype(v.dtype())?);
        }
        Ok(g)
    };
    // norm of (3, 4, 12, 0) is 13
    let mut grads = set([&[3.0, 4.0], &[12.0], &[0.0], &[0.0]])?;
    assert!((clip_grad_norm(&mut grads, &params, 100.0)? - 13.0).abs() < 1e-9);
    assert_eq!(
        flat(grads.get(&params[0].1).expect("kept"))?,
        vec![3.0, 4.0]
    );

    let mut grads = set([&[3.0, 4.0], &[0.0], &[12.0], &[0.0]])?;
    let norm = clip_grad_norm(&mut grads, &params, 1.0)?;
    assert!((norm - 13.0).abs() < 1e-9);
    let after: f64 = params
        .iter()
        .map(|(_, v)| {
            Ok(flat(grads.get(v).expect("kept"))?
                .iter()
                .map(|x| x * x)
                .sum::<f64>())
        })
        .sum::<Result<f64>>()?;
    assert!(
        (after.sqrt() - 1.0).abs() < 1e-6,
        "norm after clipping {}",
        after.sqrt()
    );
    let a = flat(grads.get(&params[0].1).expect("kept"))?;
    assert!((a[0] - 3.0 / 13.0).abs() < 1e-6 && (a[1] - 4.0 / 13.0).abs() < 1e-6);
    Ok(())
}

/// Step time for a 14M-parameter model's worth of tensors. A timing, not a check:
/// `cargo test -p ferrochat-train --release optim -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check; run by hand"]
fn bench_step_14m() -> Result<()> {
    let mut params = vec![param(
        "model.embed_tokens.weight",
        vec![0.01; 8192 * 384],
        &[8192, 384],
        DType::F32,
    )?];
    for l in 0..6 {
        for (n, r, c) in [("qkvo", 4 * 384, 384), ("mlp", 3 * 1024, 384)] {
            params.push(param(
                &format!("layers.{l}.{n}.weight"),
                vec![0.01; r * c],
                &[r, c],
                DType::F32,
            )?);
        }
    }
    let grads = grads_for(&params, 0, None)?;
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    let mut times = Vec::new();
    for _ in 0..6 {
        let mut g = grads_for(&params, 0, None)?;
        let clip_start = std::time::Instant::now();
        clip_grad_norm(&mut g, &params, 1.0)?;
        let clip = clip_start.elapsed().as_secs_f64() * 1e3;
        let step_start = std::time::Instant::now();
        opt.step(&grads, 1e-3)?;
        times.push((clip, step_start.elapsed().as_secs_f64() * 1e3));
    }
    let n: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    println!("{n} parameters: (clip ms, step ms) per call {times:.2?}");
    Ok(())
}
