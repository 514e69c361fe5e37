//! Timings of each fused op against its composite, forward and forward+backward, on the
//! shapes of the `small` preset (B=8, T=256, width 384, 6 heads of 64, MLP 1024, vocab
//! 8192). Ignored by default; run with
//! `cargo test -p ferrochat-model --release ops::bench -- --ignored --nocapture`.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};

use super::tests::rand_tensor;
use super::{composite, IGNORE};

/// Median wall time of `f` in milliseconds, after a warm-up run.
fn time(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut ms = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        f()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

fn report(name: &str, vars: &[Var], op: impl Fn(bool, &[Tensor]) -> Result<Tensor>) -> Result<()> {
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let mut line = format!("{name:<16}");
    for fused in [true, false] {
        let fwd = time(|| op(fused, &ts).map(drop))?;
        let both = time(|| op(fused, &ts)?.backward().map(drop))?;
        let label = if fused { "fused" } else { "composite" };
        line += &format!("  {label}: fwd {fwd:7.2} ms, fwd+bwd {both:7.2} ms");
    }
    println!("{line}");
    Ok(())
}

fn var(seed: u64, shape: &[usize]) -> Result<Var> {
    Var::from_tensor(&rand_tensor(seed, shape, 1.0)?)
}

#[test]
#[ignore = "timing, not a check; run by hand"]
fn bench_small_preset_shapes() -> Result<()> {
    let (b, t, h, d, width, hidden, vocab) = (8, 256, 6, 64, 384, 1024, 8192);
    let n = b * t;
    report(
        "rms_norm",
        &[var(1, &[n, width])?, var(2, &[width])?],
        |f, x| match f {
            true => super::rms_norm(&x[0], &x[1], 1e-5),
            false => composite::rms_norm(&x[0], &x[1], 1e-5),
        },
    )?;
    let angles = rand_tensor(3, &[t, d / 2], 3.0)?;
    let (cos, sin) = (angles.cos()?, angles.sin()?);
    report("rope", &[var(4, &[b, t, h, d])?], |f, x| match f {
        true => super::rope(&x[0], &cos, &sin),
        false => composite::rope(&x[0], &cos, &sin),
    })?;
    let qkv = [
        var(5, &[b, t, h, d])?,
        var(6, &[b, t, h, d])?,
        var(7, &[b, t, h, d])?,
    ];
    report("attention", &qkv, |f, x| match f {
        true => super::causal_attention(&x[0], &x[1], &x[2], 0.125),
        false => composite::causal_attention(&x[0], &x[1], &x[2], 0.125),
    })?;
    report(
        "swiglu",
        &[var(8, &[n, hidden])?, var(9, &[n, hidden])?],
        |f, x| match f {
            true => super::swiglu(&x[0], &x[1]),
            false => composite::swiglu(&x[0], &x[1]),
        },
    )?;
    for (name, i, o) in [
        ("linear 384>384", width, width),
        ("linear 384>1024", width, hidden),
        ("linear 1024>384", hidden, width),
        ("linear 384>8192", width, vocab),
    ] {
        report(
            name,
            &[var(11, &[n, i])?, var(12, &[o, i])?],
            |f, x| match f {
                true => super::linear(&x[0], &x[1]),
                false => composite::linear(&x[0], &x[1]),
            },
        )?;
    }
    let targets: Vec<u32> = (0..n)
        .map(|i| {
            if i % 10 == 0 {
                IGNORE
            } else {
                (i * 31 % vocab) as u32
            }
        })
        .collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?;
    report("cross_entropy", &[var(10, &[n, vocab])?], |f, x| match f {
        true => super::cross_entropy(&x[0], &targets),
        false => composite::cross_entropy(&x[0], &targets),
    })?;
    report(
        "head+loss",
        &[var(13, &[n, width])?, var(14, &[vocab, width])?],
        |f, x| match f {
            true => super::linear_cross_entropy(&x[0], &x[1], &targets),
            false => super::cross_entropy(&super::linear(&x[0], &x[1])?, &targets),
        },
    )
}
