//! Process-wide settings that decide CPU speed, applied before any thread pool starts,
//! the `--device` choice, and opening a checkpoint on it.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::Device;
use ferrochat_model::{checkpoint, Llama};
use ferrochat_tokenizer::Tokenizer;

/// Sets the thread counts and the allocator policy the training step was measured with.
///
/// - `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` default to the core count: set, they
///   also spare gemm a re-read of the CPU description on every call.
/// - glibc's malloc hands big buffers back to the OS on free and maps fresh ones on the
///   next allocation; a training step allocates and frees the same big activations
///   every time, so that churn (page faults, zeroing) costs a large share of a small
///   step. Serving every size from the heap and never trimming it keeps them warm.
pub fn tune() {
    // data-parallel ranks started on one machine share its cores
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .div_ceil(ferrochat_train::dist::local_size());
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, n.to_string());
        }
    }
    // The command runs on a thread of this pool (`on_pool`), and candle's backward pass
    // recurses through the whole graph: its threads get more stack than the main thread's
    // 8 MB (address space; only what is used is backed by memory).
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(64 << 20)
        .build_global();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Runs `f` on a thread of rayon's pool, where the fused kernels share out their work.
/// Called from outside the pool, every kernel that splits its work hands all of it to
/// the pool and sleeps until it is done: two thread switches per operation, most of a
/// small model's decoding step. From a thread of the pool, the caller works on its
/// share while the others take theirs.
///
/// Not for work that waits on other work run on the pool (a server's loop): a thread of
/// the pool waiting inside `f` could pick it up and never come back.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// `--device cpu|cuda[:N]`. Plain `cuda` is the first GPU, or under an MPI launcher the
/// GPU of this rank's place on its machine (rank 1 of a machine on GPU 1, ...).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ordinal: usize = match n.strip_prefix("cuda:") {
                Some(i) => i
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad device `{n}`: use cuda or cuda:N"))?,
                None => ferrochat_train::dist::local_rank(),
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("--device {n}: this ferrochat was built without CUDA (rebuild with `--features cuda`)");
            }
            Ok(Device::new_cuda(ordinal)?)
        }
        other => bail!("unknown device `{other}`: use cpu or cuda[:N]"),
    }
}

/// A checkpoint folder's tokenizer and model, on the `--device` named.
pub fn open_model(dir: &Path, device_name: &str) -> Result<(Tokenizer, Llama, Device)> {
    let device = device(device_name)?;
    let tok = Tokenizer::load(dir)?;
    let model = checkpoint::load_model(dir, &device)?;
    Ok((tok, model, device))
}

/// `--watermark-key` and its strength, shared by the commands that generate.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WatermarkArgs {
    /// Plant a green-list watermark keyed by this number in the generated text
    /// (`ferrochat detect --key` finds it)
    #[arg(long)]
    pub watermark_key: Option<u64>,
    /// Share of the vocabulary that is green at each step
    #[arg(long, default_value_t = ferrochat_engine::Watermark::DEFAULT_GAMMA, requires = "watermark_key")]
    pub watermark_gamma: f32,
    /// Logit bonus of green tokens: higher is easier to detect and costs more quality
    #[arg(long, default_value_t = ferrochat_engine::Watermark::DEFAULT_DELTA, requires = "watermark_key")]
    pub watermark_delta: f32,
}

impl WatermarkArgs {
    /// The watermark asked for, checked; `None` without `--watermark-key`.
    pub fn get(&self) -> Result<Option<ferrochat_engine::Watermark>> {
        let Some(key) = self.watermark_key else {
            return Ok(None);
        };
        let w = ferrochat_engine::Watermark {
            key,
            gamma: self.watermark_gamma,
            delta: self.watermark_delta,
        };
        if let Err(e) = w.validate() {
            // "watermark gamma must ..." -> "--watermark-gamma must ..."
            bail!("--{}", e.replacen(' ', "-", 1));
        }
        Ok(Some(w))
    }
}

/// Sampling settings from the command line, checked; an error names the flag at fault.
pub fn sampling(p: ferrochat_engine::SamplingParams) -> Result<ferrochat_engine::SamplingParams> {
    if let Err(e) = p.validate() {
        let (field, rest) = e.split_once(' ').unwrap_or((&e, ""));
        bail!("--{} {rest}", field.replace('_', "-"));
    }
    Ok(p)
}
