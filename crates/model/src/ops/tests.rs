//! The fused CPU ops against their composite references: forward values and autograd
//! gradients on random inputs with odd sizes and non-contiguous layouts, and finite
//! differences as a check that does not trust either implementation.

use candle_core::{Device, Result, Tensor, Var};

use super::check::uniform as rand_tensor;
use super::{
    accel, attention, composite, cross_entropy, heads, linear, rms_norm, rope, swiglu, IGNORE,
};

const TOL: f32 = 1e-4;

fn var(seed: u64, shape: &[usize], scale: f32) -> Result<Var> {
    Var::from_tensor(&rand_tensor(seed, shape, scale)?)
}

/// `max |a - b| / max |b|`, so the tolerance is relative to the tensor's magnitude.
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let size = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(diff / size.max(1e-6))
}

/// Evaluates `f` fused and composite on the same variables with the loss
/// `sum(out * w)` for a fixed random `w`, and compares the outputs and the gradients
/// of the first `n_grad` variables.
fn compare(
    name: &str,
    vars: &[Var],
    n_grad: usize,
    f: impl Fn(bool, &[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let mut runs = Vec::new();
    for fused in [true, false] {
        let out = f(fused, &ts)?;
        let w = rand_tensor(99, out.dims(), 1.0)?;
        let grads = (&out * &w)?.sum_all()?.backward()?;
        let gs: Vec<Option<Tensor>> = ts[..n_grad].iter().map(|t| grads.get(t).cloned()).collect();
        runs.push((out, gs));
    }
    let (fo, fg) = &runs[0];
    let (co, cg) = &runs[1];
    let d = rel_diff(fo, co)?;
    assert!(d < TOL, "{name}: forward differs by {d}");
    for (i, (f, c)) in fg.iter().zip(cg).enumerate() {
        let (Some(f), Some(c)) = (f, c) else {
            panic!(
                "{name}: input {i} has no gradient (fused: {}, composite: {})",
                f.is_some(),
                c.is_some()
            );
        };
        let d = rel_diff(f, c)?;
        assert!(d < TOL, "{name}: gradient of input {i} differs by {d}");
    }
    Ok(())
}

/// The two fast versions of an op, both run here: our CPU kernels, and the GPU path
/// (candle's fused kernels with our backward passes, which have CPU versions too).
#[derive(Clone, Copy, Debug)]
enum Fast {
    Cpu,
    Accel,
}

const FAST: [Fast; 2] = [Fast::Cpu, Fast::Accel];

#[test]
fn rms_norm_matches_composite() -> Result<()> {
    let norm = |fast, fused, x: &Tensor, w: &Tensor, eps| match (fused, fast) {
        (true, Fast::Cpu) => rms_norm::rms_norm(x, w, eps),
        (true, Fast::Accel) => accel::rms_norm(x, w, eps),
        (false, _) => composite::rms_norm(x, w, eps),
    };
    for fast in FAST {
        // x is the transpose of a (37, 29) variable: non-contiguous rows of width 37.
        let vars = [var(1, &[37, 29], 2.0)?, var(2, &[37], 1.0)?];
        compare(
            &format!("{fast:?} rms_norm (strided)"),
            &vars,
            2,
            |fused, t| norm(fast, fused, &t[0].t()?, &t[1], 1e-5),
        )?;
        let vars = [var(3, &[3, 5, 37], 1.0)?, var(4, &[37], 1.0)?];
        compare(&format!("{fast:?} rms_norm (3-d)"), &vars, 2, |fused, t| {
            norm(fast, fused, &t[0], &t[1], 1e-6)
        })?;
    }
    Ok(())
}

/// cos/sin rows for positions `start..start + t` of a table, as a narrowed view.
fn rope_tables(t: usize, half: usize, start: usize) -> Result<(Tensor, Tensor)> {
    let angles: Vec<f32> = (0..(start + t) * half)
        .map(|i| (i / half) as f32 / 10f32.powf((i % half) as f32 / half as f32))
        .collect();
    let a = Tensor::from_vec(angles, (start + t, half), &Device::Cpu)?;
    Ok((a.cos()?.narrow(0, start, t)?, a.sin()?.narrow(0, start, t)?))
}

#[test]
fn rope_matches_composite() -> Result<()> {
    let (cos, sin) = rope_tables(7, 5, 3)?;
    // (B, H, T, D) variable seen as (B, T, H, D): the layout q/k have after a transpose.
    let vars = [var(5, &[2, 3, 7, 10], 1.0)?];
    for fast in FAST {
        compare(&format!("{fast:?} rope"), &vars, 1, |fused, t| {
            let x = t[0].transpose(1, 2)?;
            match (fused, fast) {
                (true, Fast::Cpu) => rope::rope(&x, &cos, &sin),
                (true, Fast::Accel) => accel::rope(&x, &cos, &sin),
                (false, _) => composite::rope(&x, &cos, &sin),
            }
        })?;
    }
    Ok(())
}

fn attention_case(
    fast: Fast,
    b: usize,
    (tq, tk): (usize, usize),
    (hq, hkv): (usize, usize),
    d: usize,
) -> Result<()> {
    let name = format!("{fast:?} attention b={b} tq={tq} tk={tk} hq={hq} hkv={hkv} d={d}");
    let scale = 1.0 / (d as f64).sqrt();
    // q is stored (B, Hq, Tq, D) and transposed; k/v are plain (B, Tk, Hkv, D).
    let vars = [
        var(6, &[b, hq, tq, d], 1.5)?,
        var(7, &[b, tk, hkv, d], 1.5)?,
        var(8, &[b, tk, hkv, d], 1.0)?,
    ];
    compare(&name, &vars, 3, |fused, t| {
        let q = t[0].transpose(1, 2)?;
        match (fused, fast) {
            (true, Fast::Cpu) => attention::causal_attention(&q, &t[1], &t[2], scale),
            (true, Fast::Accel) => accel::causal_attention(&q, &t[1], &t[2], scale),
            (false, _) => composite::causal_attention(&q, &t[1], &t[2], scale),
        }
    })
}

#[test]
fn attention_matches_composite() -> Result<()> {
    for fast in FAST {
        attention_case(fast, 2, (5, 9), (4, 2), 6)?; // GQA, queries continue a prefix
        attention_case(fast, 1, (70, 70), (3, 3), 8)?; // more than one query block
        attention_case(fast, 2, (1, 13), (4, 1), 4)?; // one decoding step
        attention_case(fast, 1, (130, 131), (2, 1), 5)?; // blocks, offset and GQA together
    }
    Ok(())
}

#[test]
fn attention_without_grad_matches() -> Result<()> {
    // Plain tensors take the inference path that keeps no probabilities.
    let q = rand_tensor(10, &[2, 67, 4, 8], 1.0)?;
    let k = rand_tensor(11, &[2, 67, 2, 8], 1.0)?;
    let v = rand_tensor(12, &[2, 67, 2, 8], 1.0)?;
    let f = attention::causal_attention(&q, &k, &v, 0.3)?;
    let c = composite::causal_attention(&q, &k, &v, 0.3)?;
    assert!(rel_diff(&f, &c)? < TOL);
    // The public function takes the fused path here, bit for bit.
    let p = super::causal_attention(&q, &k, &v, 0.3)?;
    assert_eq!(rel_diff(&p, &f)?, 0.0);
    Ok(())
}

#[test]
fn swiglu_matches_composite() -> Result<()> {
    let vars = [var(13, &[21, 13], 4.0)?, var(14, &[13, 21], 1.0)?];
    compare("swiglu", &vars, 2, |fused, t| {
        let gate = t[0].t()?;
        match fused {
            true => swiglu::swiglu(&gate, &t[1]),
            false => composite::swiglu(&gate, &t[1]),
        }
    })
}

#[test]
fn swiglu_linear_matches_composite() -> Result<()> {
    let vars = [
        var(40, &[33, 19], 1.0)?,
        var(41, &[27, 19], 1.0)?,
        var(42, &[27, 19], 1.0)?,
    ];
    compare("swiglu_linear", &vars, 3, |fused, t| match fused {
        true => swiglu::swiglu_linear(&t[0], &t[1], &t[2]),
        false => composite::swiglu(
            &composite::linear(&t[0], &t[1])?,
            &composite::linear(&t[0], &t[2])?,
        ),
    })?;
    // a transposed input, narrowed weights, products big enough to split between threads
    let vars = [
        var(43, &[90, 130], 1.0)?,
        var(44, &[110, 95], 1.0)?,
        var(45, &[110, 95], 1.0)?,
    ];
    compare("swiglu_linear (strided)", &vars, 3, |fused, t| {
        let x = t[0].t()?;
        let (wg, wu) = (t[1].narrow(1, 2, 90)?, t[2].narrow(1, 5, 90)?);
        match fused {
            true => swiglu::swiglu_linear(&x, &wg, &wu),
            false => composite::swiglu(&composite::linear(&x, &wg)?, &composite::linear(&x, &wu)?),
        }
    })?;
    let x = rand_tensor(46, &[4, 5], 1.0)?;
    let w = rand_tensor(47, &[3, 5], 1.0)?;
    let err = swiglu::swiglu_linear(&x, &w, &rand_tensor(48, &[3, 6], 1.0)?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("differ"), "{err}");
    let err = swiglu::swiglu_linear(
        &x,
        &rand_tensor(49, &[3, 6], 1.0)?,
        &rand_tensor(50, &[3, 6], 1.0)?,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("5 features but the weights expect 6"), "{err}");
    Ok(())
}

#[test]
fn linear_heads_match_composite() -> Result<()> {
    // (B=2, T=5) rows, 3 heads of 6, rotated from position 2 (as a cache continues)
    let (cos, sin) = rope_tables(5, 3, 2)?;
    let vars = [var(52, &[10, 11], 1.0)?, var(53, &[18, 11], 1.0)?];
    for rotate in [true, false] {
        let rope = rotate.then_some((&cos, &sin));
        compare("linear_heads", &vars, 2, |fused, t| {
            let y = composite::linear(&t[0], &t[1])?.reshape((2, 5, 3, 6))?;
            match (fused, rope) {
                (true, _) => heads::linear_heads(&t[0], &t[1], (2, 5, 3, 6), rope),
                (false, Some((c, s))) => composite::rope(&y, c, s),
                (false, None) => Ok(y),
            }
        })?;
    }
    // a transposed input and a narrowed weight, big enough to split between threads
    let (cos, sin) = rope_tables(40, 16, 0)?;
    let vars = [var(54, &[70, 80], 1.0)?, var(55, &[64, 75], 1.0)?];
    compare("linear_heads (strided)", &vars, 2, |fused, t| {
        let (x, w) = (t[0].t()?, t[1].narrow(1, 4, 70)?);
        match fused {
            true => heads::linear_heads(&x, &w, (2, 40, 2, 32), Some((&cos, &sin))),
            false => composite::rope(
                &composite::linear(&x, &w)?.reshape((2, 40, 2, 32))?,
                &cos,
                &sin,
            ),
        }
    })?;
    let x = rand_tensor(56, &[10, 11], 1.0)?;
    let w = rand_tensor(57, &[18, 11], 1.0)?;
    let err = heads::linear_heads(&x, &w, (2, 5, 2, 6), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not make"), "{err}");
    Ok(())
}

#[test]
fn linear_residual_matches_composite() -> Result<()> {
    // heads (B=2, T=3, H=2, D=4) onto a residual stream of width 7
    let vars = [
        var(61, &[6, 7], 1.0)?,
        var(62, &[2, 3, 2, 4], 1.0)?,
        var(63, &[7, 8], 1.0)?,
    ];
    compare("linear_residual", &vars, 3, |fused, t| match fused {
        true => linear::linear_residual(&t[0], &t[1], &t[2]),
        false => &t[0] + composite::linear(&t[1].reshape((6, 8))?, &t[2])?,
    })?;
    // a transposed residual and input, a narrowed weight, big enough to split
    let vars = [
        var(64, &[90, 70], 1.0)?,
        var(65, &[80, 70], 1.0)?,
        var(66, &[90, 85], 1.0)?,
    ];
    compare("linear_residual (strided)", &vars, 3, |fused, t| {
        let (r, a, w) = (t[0].t()?, t[1].t()?, t[2].narrow(1, 3, 80)?);
        match fused {
            true => linear::linear_residual(&r, &a, &w),
            false => &r + composite::linear(&a, &w)?,
        }
    })?;
    let r = rand_tensor(67, &[6, 7], 1.0)?;
    let a = rand_tensor(68, &[6, 8], 1.0)?;
    let err = linear::linear_residual(&r, &a, &rand_tensor(69, &[7, 9], 1.0)?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not map 8 features"), "{err}");
    let err = linear::linear_residual(&r, &rand_tensor(70, &[5, 3, 3], 1.0)?, &a.t()?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not split into 6 rows"), "{err}");
    Ok(())
}

#[test]
fn linear_matches_composite() -> Result<()> {
    let vars = [var(15, &[33, 19], 1.0)?, var(16, &[27, 19], 1.0)?];
    compare("linear", &vars, 2, |fused, t| match fused {
        true => linear::linear(&t[0], &t[1]),
        false => composite::linear(&t[0], &t[1]),
    })?;
    // a transposed input, a weight that is a narrowed view, a gemm big enough to split
    let vars = [var(17, &[70, 90], 1.0)?, var(18, &[80, 75], 1.0)?];
    compare("linear (strided)", &vars, 2, |fused, t| {
        let x = t[0].t()?;
        let w = t[1].narrow(1, 3, 70)?;
        match fused {
            true => linear::linear(&x, &w),
            false => composite::linear(&x, &w),
        }
    })?;
    let x = rand_tensor(19, &[4, 5], 1.0)?;
    let w = rand_tensor(19, &[3, 6], 1.0)?;
    let err = linear::linear(&x, &w).unwrap_err().to_string();
    assert!(err.contains("5 features but the weight expects 6"), "{err}");
    Ok(())
}

fn targets(n: usize, v: usize, ignore_every: usize) -> Result<Tensor> {
    let t: Vec<u32> = (0..n)
        .map(|i| {
            if ignore_every > 0 && i % ignore_every == 0 {
                IGNORE
            } else {
                ((i * 7 + 3) % v) as u32
            }
        })
        .collect();
    Tensor::new(t.as_slice(), &Device::Cpu)
}

#[test]
fn cross_entropy_matches_composite() -> Result<()> {
    let tg = targets(17, 23, 3)?;
    let vars = [var(15, &[23, 17], 3.0)?];
    for fast in FAST {
        compare(&format!("{fast:?} cross_entropy"), &vars, 1, |fused, t| {
            let logits = t[0].t()?;
            match (fused, fast) {
                (true, Fast::Cpu) => cross_entropy::cross_entropy(&logits, &tg),
                (true, Fast::Accel) => accel::cross_entropy(&logits, &tg),
                // candle's index_select (inside the composite) needs contiguous input.
                (false, _) => composite::cross_entropy(&logits.contiguous()?, &tg),
            }
        })?;
    }
    Ok(())
}

#[test]
fn linear_cross_entropy_matches_composite() -> Result<()> {
    // 23 rows, every 4th ignored, in blocks of 5 (several blocks, a ragged last one),
    // a transposed input, and the loss scaled by the random weight of `compare`
    let tg = targets(23, 41, 4)?;
    let vars = [var(40, &[17, 23], 2.0)?, var(41, &[41, 17], 1.0)?];
    for block in [5, 64] {
        compare("linear_cross_entropy", &vars, 2, |fused, t| {
            let x = t[0].t()?;
            match fused {
                true => linear::linear_cross_entropy_in(&x, &t[1], &tg, block),
                false => composite::cross_entropy(&composite::linear(&x, &t[1])?, &tg),
            }
        })?;
    }
    // nothing counts: zero loss, zero gradients
    let none = targets(6, 41, 1)?;
    let x = var(42, &[6, 17], 1.0)?;
    let w = var(43, &[41, 17], 1.0)?;
    let loss = linear::linear_cross_entropy(x.as_tensor(), w.as_tensor(), &none)?;
    assert_eq!(loss.to_scalar::<f32>()?, 0.0);
    let grads = loss.backward()?;
    let dx = grads.get(x.as_tensor()).expect("dx").abs()?.sum_all()?;
    assert_eq!(dx.to_scalar::<f32>()?, 0.0);
    // bad targets and shapes are named
    let bad = Tensor::new(&[0u32, 41, 2, 3, 4, 5], &Device::Cpu)?;
    let err = linear::linear_cross_entropy(x.as_tensor(), w.as_tensor(), &bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("target 41 is outside the vocabulary of 41"),
        "{err}"
    );
    let narrow = w.as_tensor().narrow(1, 0, 16)?;
    let err = linear::linear_cross_entropy(x.as_tensor(), &narrow, &none).unwrap_err();
    assert!(
        err.to_string()
            .contains("17 features but the head expects 16"),
        "{err}"
    );
    Ok(())
}

fn fast_cross_entropy(fast: Fast, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    match fast {
        Fast::Cpu => cross_entropy::cross_entropy(logits, targets),
        Fast::Accel => accel::cross_entropy(logits, targets),
    }
}

#[test]
fn cross_entropy_all_ignored_is_zero() -> Result<()> {
    for fast in FAST {
        let x = var(16, &[4, 9], 1.0)?;
        let tg = Tensor::new(&[IGNORE; 4], &Device::Cpu)?;
        let loss = fast_cross_entropy(fast, x.as_tensor(), &tg)?;
        assert_eq!(loss.to_scalar::<f32>()?, 0.0, "{fast:?}");
        let grads = loss.backward()?;
        let g = grads.get(x.as_tensor()).expect("a zero gradient, not none");
        assert_eq!(g.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0, "{fast:?}");
    }
    Ok(())
}

#[test]
fn cross_entropy_rejects_bad_targets() -> Result<()> {
    let x = rand_tensor(17, &[3, 5], 1.0)?;
    for fast in FAST {
        // the first target outside the vocabulary is named, ignored rows pass
        let tg = Tensor::new(&[1u32, IGNORE, 5], &Device::Cpu)?;
        let err = fast_cross_entropy(fast, &x, &tg).unwrap_err().to_string();
        assert!(
            err.contains("target 5 is outside the vocabulary of 5"),
            "{fast:?}: {err}"
        );
        let short = Tensor::new(&[1u32, 2], &Device::Cpu)?;
        let err = fast_cross_entropy(fast, &x, &short)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 rows of logits"), "{fast:?}: {err}");
    }
    Ok(())
}

/// Central differences of `sum(f(x) * w)` at a few coordinates of `x` against autograd.
fn finite_difference(name: &str, x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
    let xv = Var::from_tensor(x)?;
    let out = f(xv.as_tensor())?;
    let w = rand_tensor(98, out.dims(), 1.0)?;
    let loss =
        |t: &Tensor| -> Result<f64> { Ok((f(t)? * &w)?.sum_all()?.to_scalar::<f32>()? as f64) };
    let grads = (out * &w)?.sum_all()?.backward()?;
    let analytic: Vec<f32> = grads
        .get(xv.as_tensor())
        .expect("gradient")
        .flatten_all()?
        .to_vec1()?;
    let base: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let eps = 1e-2f32;
    for i in (0..base.len()).step_by(base.len() / 11 + 1) {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let lp = loss(&Tensor::from_vec(plus, x.shape(), x.device())?)?;
        let lm = loss(&Tensor::from_vec(minus, x.shape(), x.device())?)?;
        let numeric = ((lp - lm) / (2.0 * eps as f64)) as f32;
        let err = (numeric - analytic[i]).abs() / analytic[i].abs().max(1.0);
        assert!(
            err < 3e-3,
            "{name}[{i}]: numeric {numeric}, analytic {}",
            analytic[i]
        );
    }
    Ok(())
}

#[test]
fn fused_ops_match_finite_differences() -> Result<()> {
    let k = rand_tensor(20, &[1, 6, 1, 4], 1.0)?;
    let v = rand_tensor(21, &[1, 6, 1, 4], 1.0)?;
    let q = rand_tensor(22, &[1, 4, 2, 4], 1.0)?;
    finite_difference("attention dq", &q, |q| {
        attention::causal_attention(q, &k, &v, 0.5)
    })?;
    finite_difference("attention dk", &k, |k| {
        attention::causal_attention(&q, k, &v, 0.5)
    })?;
    finite_difference("attention dv", &v, |v| {
        attention::causal_attention(&q, &k, v, 0.5)
    })?;
    let w = rand_tensor(23, &[7], 1.0)?;
    finite_difference("rms_norm", &rand_tensor(24, &[3, 7], 1.0)?, |x| {
        rms_norm::rms_norm(x, &w, 1e-5)
    })?;
    let up = rand_tensor(25, &[3, 7], 1.0)?;
    finite_difference("swiglu", &rand_tensor(26, &[3, 7], 2.0)?, |g| {
        swiglu::swiglu(g, &up)
    })?;
    let tg = targets(5, 6, 4)?;
    finite_difference("cross_entropy", &rand_tensor(27, &[5, 6], 2.0)?, |x| {
        cross_entropy::cross_entropy(x, &tg)
    })?;
    let lw = rand_tensor(29, &[4, 7], 1.0)?;
    finite_difference("linear dx", &rand_tensor(30, &[3, 7], 1.0)?, |x| {
        linear::linear(x, &lw)
    })?;
    let lx = rand_tensor(31, &[3, 7], 1.0)?;
    finite_difference("linear dw", &lw, |w| linear::linear(&lx, w))?;
    let wu = rand_tensor(51, &[4, 7], 1.0)?;
    finite_difference("swiglu_linear dx", &lx, |x| {
        swiglu::swiglu_linear(x, &lw, &wu)
    })?;
    finite_difference("swiglu_linear dw_gate", &lw, |w| {
        swiglu::swiglu_linear(&lx, w, &wu)
    })?;
    finite_difference("swiglu_linear dw_up", &wu, |w| {
        swiglu::swiglu_linear(&lx, &lw, w)
    })?;
    let ht = targets(5, 9, 3)?;
    let hw = rand_tensor(32, &[9, 7], 1.0)?;
    finite_difference(
        "linear_cross_entropy dx",
        &rand_tensor(33, &[5, 7], 1.0)?,
        |x| linear::linear_cross_entropy_in(x, &hw, &ht, 2),
    )?;
    let hx = rand_tensor(34, &[5, 7], 1.0)?;
    finite_difference("linear_cross_entropy dw", &hw, |w| {
        linear::linear_cross_entropy_in(&hx, w, &ht, 2)
    })?;
    let (cos, sin) = rope_tables(3, 2, 1)?;
    finite_difference("rope", &rand_tensor(28, &[1, 3, 2, 4], 1.0)?, |x| {
        rope::rope(x, &cos, &sin)
    })?;
    let hw = rand_tensor(58, &[8, 5], 1.0)?;
    finite_difference("linear_heads dx", &rand_tensor(59, &[3, 5], 1.0)?, |x| {
        heads::linear_heads(x, &hw, (1, 3, 2, 4), Some((&cos, &sin)))
    })?;
    let rr = rand_tensor(71, &[3, 4], 1.0)?;
    let ra = rand_tensor(72, &[1, 3, 2, 3], 1.0)?;
    let rw = rand_tensor(73, &[4, 6], 1.0)?;
    finite_difference("linear_residual dres", &rr, |r| {
        linear::linear_residual(r, &ra, &rw)
    })?;
    finite_difference("linear_residual da", &ra, |a| {
        linear::linear_residual(&rr, a, &rw)
    })?;
    finite_difference("linear_residual dw", &rw, |w| {
        linear::linear_residual(&rr, &ra, w)
    })?;
    let hx = rand_tensor(60, &[3, 5], 1.0)?;
    finite_difference("linear_heads dw", &hw, |w| {
        heads::linear_heads(&hx, w, (1, 3, 2, 4), Some((&cos, &sin)))
    })
}

/// Gradients of `sum(out * w)` for a fixed random `w`, for each of `ts`.
fn grads_of(out: &Tensor, ts: &[&Tensor]) -> Result<Vec<Tensor>> {
    let w = rand_tensor(98, out.dims(), 1.0)?;
    let g = (out * &w)?.sum_all()?.backward()?;
    Ok(ts
        .iter()
        .map(|t| g.get(t).expect("every input has a gradient").clone())
        .collect())
}

#[test]
fn autocast_multiplies_in_bf16_and_hands_back_f32_gradients() -> Result<()> {
    use candle_core::DType;
    let (x, w) = (var(81, &[33, 19], 1.0)?, var(82, &[27, 19], 1.0)?);
    let (x, w) = (x.as_tensor(), w.as_tensor());
    let exact = super::linear(x, w)?;
    let exact_g = grads_of(&exact, &[x, w])?;
    let (y, g) = {
        let _bf16 = super::autocast(Some(DType::BF16))?;
        assert_eq!(super::autocast_dtype(), Some(DType::BF16));
        let y = super::linear(x, w)?;
        (y.clone(), grads_of(&y, &[x, w])?)
    };
    assert_eq!(super::autocast_dtype(), None, "the guard restores f32");
    // the product is bf16 operands multiplied and widened back, nothing else
    let by_hand = x
        .to_dtype(DType::BF16)?
        .matmul(&w.to_dtype(DType::BF16)?.t()?)?
        .to_dtype(DType::F32)?;
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(rel_diff(&y, &by_hand)?, 0.0);
    let d = rel_diff(&y, &exact)?;
    assert!(d > 0.0 && d < 2e-2, "bf16 product is {d} from f32");
    for (i, (g, e)) in g.iter().zip(&exact_g).enumerate() {
        assert_eq!(
            g.dtype(),
            DType::F32,
            "gradient {i} reaches the f32 input in f32"
        );
        let d = rel_diff(g, e)?;
        assert!(d < 2e-2, "gradient {i} is {d} from f32");
    }
    // after the guard, the fused f32 kernel again, to the bit
    assert_eq!(rel_diff(&super::linear(x, w)?, &exact)?, 0.0);
    Ok(())
}

#[test]
fn autocast_attention_and_loss_stay_close_to_f32() -> Result<()> {
    use candle_core::DType;
    let q = var(83, &[2, 6, 4, 8], 1.0)?;
    let k = var(84, &[2, 6, 2, 8], 1.0)?;
    let v = var(85, &[2, 6, 2, 8], 1.0)?;
    let ins = [q.as_tensor(), k.as_tensor(), v.as_tensor()];
    let exact = super::causal_attention(ins[0], ins[1], ins[2], 0.35)?;
    let exact_g = grads_of(&exact, &ins)?;
    let _bf16 = super::autocast(Some(DType::BF16))?;
    let out = super::causal_attention(ins[0], ins[1], ins[2], 0.35)?;
    assert_eq!(out.dtype(), DType::F32);
    assert!(rel_diff(&out, &exact)? < 2e-2);
    for (i, (g, e)) in grads_of(&out, &ins)?.iter().zip(&exact_g).enumerate() {
        assert_eq!(g.dtype(), DType::F32);
        let d = rel_diff(g, e)?;
        assert!(d < 3e-2, "attention gradient {i} is {d} from f32");
    }
    // the head's loss: bf16 logits, f32 softmax
    let (hx, hw) = (var(86, &[9, 16], 1.0)?, var(87, &[30, 16], 1.0)?);
    let t = targets(9, 30, 4)?;
    let lo = super::linear_cross_entropy(hx.as_tensor(), hw.as_tensor(), &t)?;
    drop(_bf16);
    let exact = super::linear_cross_entropy(hx.as_tensor(), hw.as_tensor(), &t)?;
    let (lo, exact) = (lo.to_scalar::<f32>()?, exact.to_scalar::<f32>()?);
    assert!(
        (lo - exact).abs() < 1e-2 * exact.abs(),
        "{lo} against {exact}"
    );
    Ok(())
}

#[test]
fn autocast_nests_and_refuses_a_wide_dtype() -> Result<()> {
    use candle_core::DType;
    assert!(super::autocast(Some(DType::F32)).is_err());
    let outer = super::autocast(Some(DType::BF16))?;
    {
        let _off = super::autocast(None)?;
        assert_eq!(super::autocast_dtype(), None);
    }
    assert_eq!(super::autocast_dtype(), Some(DType::BF16));
    drop(outer);
    assert_eq!(super::autocast_dtype(), None);
    Ok(())
}

// candle's fused kernels with our backward passes (the GPU path): the same kernels
// run on the CPU, so the backward passes are checked here against the composite
// versions and finite differences.

#[test]
fn accel_softmax_matches_composite() -> Result<()> {
    let vars = [var(105, &[4, 11, 9], 3.0)?];
    compare("accel softmax", &vars, 1, |fused, t| {
        let x = t[0].transpose(1, 2)?;
        match fused {
            true => accel::softmax_last_dim(&x),
            false => candle_nn::ops::softmax(&x, candle_core::D::Minus1),
        }
    })
}

#[test]
fn accel_ops_match_finite_differences() -> Result<()> {
    let w = rand_tensor(111, &[7], 1.0)?;
    finite_difference("accel rms_norm dx", &rand_tensor(112, &[3, 7], 1.0)?, |x| {
        accel::rms_norm(x, &w, 1e-5)
    })?;
    let x = rand_tensor(113, &[3, 7], 1.0)?;
    finite_difference("accel rms_norm dw", &w, |w| accel::rms_norm(&x, w, 1e-5))?;
    finite_difference("accel softmax", &rand_tensor(114, &[3, 7], 2.0)?, |x| {
        accel::softmax_last_dim(x)
    })?;
    let (cos, sin) = rope_tables(3, 2, 1)?;
    finite_difference("accel rope", &rand_tensor(115, &[1, 3, 2, 4], 1.0)?, |x| {
        accel::rope(x, &cos, &sin)
    })?;
    let tg = targets(5, 6, 4)?;
    finite_difference(
        "accel cross_entropy",
        &rand_tensor(116, &[5, 6], 2.0)?,
        |x| accel::cross_entropy(x, &tg),
    )
}

#[test]
fn accel_ops_without_grad_hand_back_the_kernels_results() -> Result<()> {
    // Plain tensors (inference) take no copy and no graph, and give the same values.
    let x = rand_tensor(118, &[3, 5, 8], 1.0)?;
    let w = rand_tensor(119, &[8], 1.0)?;
    let y = accel::rms_norm(&x, &w, 1e-5)?;
    assert!(!y.track_op());
    assert!(rel_diff(&y, &composite::rms_norm(&x, &w, 1e-5)?)? < TOL);
    let (cos, sin) = rope_tables(5, 4, 0)?;
    let y = accel::rope(&x.reshape((3, 5, 1, 8))?, &cos, &sin)?;
    let c = composite::rope(&x.reshape((3, 5, 1, 8))?, &cos, &sin)?;
    assert!(rel_diff(&y, &c)? < TOL);
    let q = rand_tensor(120, &[2, 1, 4, 8], 1.0)?;
    let k = rand_tensor(121, &[2, 9, 2, 8], 1.0)?;
    let v = rand_tensor(122, &[2, 9, 2, 8], 1.0)?;
    let y = accel::causal_attention(&q, &k, &v, 0.3)?;
    assert!(rel_diff(&y, &composite::causal_attention(&q, &k, &v, 0.3)?)? < TOL);
    let tg = targets(5, 8, 2)?;
    let logits = x.reshape((15, 8))?.narrow(0, 0, 5)?;
    let loss = accel::cross_entropy(&logits, &tg)?;
    let c = composite::cross_entropy(&logits, &tg)?;
    assert!(rel_diff(&loss, &c)? < TOL);
    Ok(())
}
