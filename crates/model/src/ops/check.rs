//! Each hot operation as the model runs it on a device (the fused CPU kernels, or on a
//! GPU candle's kernels with our backward passes) checked against the composite version
//! computed on the CPU, forward values and gradients, and timed against the composite
//! version on the same device. `ferrochat bench ops` prints it; on a new GPU or build it
//! is the quickest proof that the device path computes what the tested CPU path does.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{composite, IGNORE};
use crate::Config;

/// One training micro-batch's shapes: `batch` x `seq` tokens through a model's layers.
#[derive(Clone, Debug)]
pub struct OpShapes {
    pub batch: usize,
    pub seq: usize,
    pub width: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub vocab: usize,
}

impl OpShapes {
    pub fn of(cfg: &Config, batch: usize, seq: usize) -> Self {
        Self {
            batch,
            seq,
            width: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: cfg.head_size(),
            hidden: cfg.intermediate_size,
            vocab: cfg.vocab_size,
        }
    }
}

/// One operation: how far the device's path is from the CPU composite reference, and
/// the median times (ms) of it and of the composite version on the device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpReport {
    pub name: String,
    /// `max |ours - reference| / max |reference|` of the output
    pub forward_diff: f32,
    /// The same, the largest over the differentiable inputs' gradients
    pub gradient_diff: f32,
    pub forward_ms: f64,
    pub forward_backward_ms: f64,
    pub composite_forward_ms: f64,
    pub composite_forward_backward_ms: f64,
}

/// Which version of an operation a case runs.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// What the model calls: `ops::rms_norm`, ... on the tensors' device.
    Model,
    Composite,
}

type Op = Box<dyn Fn(Path, &[Tensor]) -> Result<Tensor>>;

struct Case {
    name: String,
    /// The inputs on the CPU; the first `grads` are differentiated.
    inputs: Vec<Tensor>,
    grads: usize,
    op: Op,
}

/// A CPU tensor of `shape` drawn uniformly from (-scale, scale) by a seeded stream.
pub(super) fn uniform(seed: u64, shape: &[usize], scale: f32) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
}

fn cases(s: &OpShapes) -> Result<Vec<Case>> {
    let n = s.batch * s.seq;
    let (b, t, d) = (s.batch, s.seq, s.head_dim);
    let scale = 1.0 / (d as f64).sqrt();
    let angles = uniform(3, &[t, d / 2], 3.0)?;
    let targets: Vec<u32> = (0..n)
        .map(|i| match i % 10 {
            0 => IGNORE,
            _ => (i * 31 % s.vocab) as u32,
        })
        .collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?;
    let case = |name: &str, inputs: Vec<Tensor>, grads: usize, op: Op| Case {
        name: name.into(),
        inputs,
        grads,
        op,
    };
    let ids: Vec<u32> = (0..n).map(|i| (i * 7919 % s.vocab) as u32).collect();
    let mut all = vec![
        case(
            // the model's lookup (candle's index_select, its backward an index_add):
            // one version, timed and checked on the device
            "embedding",
            vec![
                uniform(15, &[s.vocab, s.width], 1.0)?,
                Tensor::new(ids.as_slice(), &Device::Cpu)?,
            ],
            1,
            Box::new(|_, x| x[0].embedding(&x[1])),
        ),
        case(
            "rms_norm",
            vec![
                uniform(1, &[n, s.width], 1.0)?,
                uniform(2, &[s.width], 1.0)?,
            ],
            2,
            Box::new(|p, x| match p {
                Path::Model => super::rms_norm(&x[0], &x[1], 1e-5),
                Path::Composite => composite::rms_norm(&x[0], &x[1], 1e-5),
            }),
        ),
        case(
            "rope",
            vec![
                uniform(4, &[b, t, s.heads, d], 1.0)?,
                angles.cos()?,
                angles.sin()?,
            ],
            1,
            Box::new(|p, x| match p {
                Path::Model => super::rope(&x[0], &x[1], &x[2]),
                Path::Composite => composite::rope(&x[0], &x[1], &x[2]),
            }),
        ),
        case(
            "attention",
            vec![
                uniform(5, &[b, t, s.heads, d], 1.0)?,
                uniform(6, &[b, t, s.kv_heads, d], 1.0)?,
                uniform(7, &[b, t, s.kv_heads, d], 1.0)?,
            ],
            3,
            Box::new(move |p, x| match p {
                Path::Model => super::causal_attention(&x[0], &x[1], &x[2], scale),
                Path::Composite => composite::causal_attention(&x[0], &x[1], &x[2], scale),
            }),
        ),
        case(
            "swiglu",
            vec![
                uniform(8, &[n, s.hidden], 3.0)?,
                uniform(9, &[n, s.hidden], 1.0)?,
            ],
            2,
            Box::new(|p, x| match p {
                Path::Model => super::swiglu(&x[0], &x[1]),
                Path::Composite => composite::swiglu(&x[0], &x[1]),
            }),
        ),
    ];
    for (i, o) in [(s.width, s.width), (s.width, s.hidden), (s.hidden, s.width)] {
        all.push(case(
            &format!("linear {i}>{o}"),
            vec![uniform(11, &[n, i], 1.0)?, uniform(12, &[o, i], 0.1)?],
            2,
            Box::new(|p, x| match p {
                Path::Model => super::linear(&x[0], &x[1]),
                Path::Composite => composite::linear(&x[0], &x[1]),
            }),
        ));
    }
    all.push(case(
        "cross_entropy",
        vec![uniform(10, &[n, s.vocab], 4.0)?, targets.clone()],
        1,
        Box::new(|p, x| match p {
            Path::Model => super::cross_entropy(&x[0], &x[1]),
            Path::Composite => composite::cross_entropy(&x[0], &x[1]),
        }),
    ));
    all.push(case(
        &format!("head+loss {}>{}", s.width, s.vocab),
        vec![
            uniform(13, &[n, s.width], 1.0)?,
            uniform(14, &[s.vocab, s.width], 0.1)?,
            targets,
        ],
        2,
        Box::new(|p, x| match p {
            Path::Model => super::linear_cross_entropy(&x[0], &x[1], &x[2]),
            Path::Composite => composite::cross_entropy(&composite::linear(&x[0], &x[1])?, &x[2]),
        }),
    ));
    Ok(all)
}

/// Output and gradients of `sum(out * w)` for the differentiable inputs, on the CPU.
fn run(case: &Case, path: Path, device: &Device) -> Result<(Tensor, Vec<Tensor>)> {
    let (vars, inputs) = on_device(case, device)?;
    let out = (case.op)(path, &inputs)?;
    let w = uniform(99, out.dims(), 1.0)?.to_device(device)?;
    let grads = (&out * &w)?.sum_all()?.backward()?;
    let mut gs = Vec::new();
    for v in &vars {
        let Some(g) = grads.get(v.as_tensor()) else {
            candle_core::bail!("{}: an input got no gradient", case.name);
        };
        gs.push(g.to_device(&Device::Cpu)?);
    }
    Ok((out.to_device(&Device::Cpu)?, gs))
}

/// The case's inputs on `device`, the differentiable ones as variables.
fn on_device(case: &Case, device: &Device) -> Result<(Vec<Var>, Vec<Tensor>)> {
    let mut vars = Vec::new();
    let mut inputs = Vec::new();
    for (i, x) in case.inputs.iter().enumerate() {
        let x = x.to_device(device)?;
        if i < case.grads {
            let v = Var::from_tensor(&x)?;
            inputs.push(v.as_tensor().clone());
            vars.push(v);
        } else {
            inputs.push(x);
        }
    }
    Ok((vars, inputs))
}

/// `max |a - b| / max |b|`
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let max = |t: &Tensor| -> Result<f32> {
        t.abs()?
            .flatten_all()?
            .max(0)?
            .to_dtype(DType::F32)?
            .to_scalar()
    };
    Ok(max(&(a - b)?)? / max(b)?.max(1e-12))
}

/// Median wall time of `f` in ms over `runs` runs after one untimed run, waiting for the
/// device to finish each.
fn time(runs: usize, device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let mut ms = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

/// Checks and times every operation on `device` with `shapes`; `runs` timed runs each.
pub fn check_ops(shapes: &OpShapes, device: &Device, runs: usize) -> Result<Vec<OpReport>> {
    let mut reports = Vec::new();
    for case in cases(shapes)? {
        let (ref_out, ref_grads) = run(&case, Path::Composite, &Device::Cpu)?;
        let (out, grads) = run(&case, Path::Model, device)?;
        let mut gradient_diff = 0f32;
        for (g, r) in grads.iter().zip(&ref_grads) {
            gradient_diff = gradient_diff.max(rel_diff(g, r)?);
        }
        let (_vars, inputs) = on_device(&case, device)?;
        let mut timed = [0f64; 4];
        for (i, path) in [Path::Model, Path::Composite].into_iter().enumerate() {
            timed[2 * i] = time(runs, device, || (case.op)(path, &inputs).map(drop))?;
            timed[2 * i + 1] = time(runs, device, || {
                (case.op)(path, &inputs)?.sum_all()?.backward().map(drop)
            })?;
        }
        reports.push(OpReport {
            name: case.name.clone(),
            forward_diff: rel_diff(&out, &ref_out)?,
            gradient_diff,
            forward_ms: timed[0],
            forward_backward_ms: timed[1],
            composite_forward_ms: timed[2],
            composite_forward_backward_ms: timed[3],
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_is_checked_and_timed_on_the_cpu() -> Result<()> {
        let shapes = OpShapes {
            batch: 2,
            seq: 9,
            width: 16,
            heads: 4,
            kv_heads: 2,
            head_dim: 4,
            hidden: 24,
            vocab: 37,
        };
        let reports = check_ops(&shapes, &Device::Cpu, 1)?;
        assert_eq!(reports.len(), 10);
        for r in &reports {
            assert!(r.forward_diff < 1e-4, "{r:?}");
            assert!(r.gradient_diff < 1e-4, "{r:?}");
            assert!(
                r.forward_ms > 0.0 && r.composite_forward_backward_ms > 0.0,
                "{r:?}"
            );
        }
        Ok(())
    }
}
