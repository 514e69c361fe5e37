//! Data-parallel training across processes: which rank this process is among how many,
//! and the collectives a training step needs (average the gradients, sum the step's
//! figures, start every rank from rank 0's weights).
//!
//! The processes are started by an MPI launcher (`mpirun -np N ferrochat pretrain ...`,
//! one process per core, socket, GPU or machine) and talk over MPI, built with the `mpi`
//! feature. Built with `nccl` as well, ranks training on GPUs average their gradients
//! with NCCL on the devices instead (MPI hands NCCL its rendezvous id and carries the
//! small figures). Without a launcher the world is one process and every collective is a
//! no-op, so the same training loop serves both.

use std::sync::OnceLock;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// This process's place among the ranks of a data-parallel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    rank: usize,
    size: usize,
}

static WORLD: OnceLock<World> = OnceLock::new();

impl World {
    /// One process alone.
    pub const ALONE: World = World { rank: 0, size: 1 };
}

/// The world [`init`] joined; one process alone if it was never called.
pub fn world() -> World {
    WORLD.get().copied().unwrap_or(World::ALONE)
}

/// Keeps MPI up while it lives (finalizes it on drop); hold it for the whole run.
pub struct Guard {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// How many processes the launcher says this run has, and this one's rank, when it was
/// started by one (Open MPI's and MPICH's variables).
pub fn launched() -> Option<(usize, usize)> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok()?.parse::<usize>().ok())
    };
    let size = var(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])?;
    let rank = var(&["OMPI_COMM_WORLD_RANK", "PMI_RANK"]).unwrap_or(0);
    Some((rank, size))
}

/// This rank's place among the ranks on its machine (to give each its own GPU).
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
    ]
    .iter()
    .find_map(|n| std::env::var(n).ok()?.parse::<usize>().ok())
    .unwrap_or(0)
}

/// How many ranks share this machine (to split its cores between them).
pub fn local_size() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|n| std::env::var(n).ok()?.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Joins the launcher's world when started by one. `expected` is the `--world-size` the
/// user asked for: a mismatch with the launcher, or asking for more than one process
/// without a launcher, is an error that says how to start the run.
pub fn init(expected: Option<usize>) -> Result<Guard, String> {
    let launched = launched();
    let size = launched.map_or(1, |(_, s)| s);
    if let Some(n) = expected {
        if n != size {
            return Err(match launched {
                None => format!(
                    "--world-size {n} needs {n} processes started by an MPI launcher: \
                     `mpirun -np {n} ferrochat ...` (this process was started alone)"
                ),
                Some(_) => format!(
                    "--world-size {n} but the launcher started {size} processes: \
                     give mpirun -np {n}, or drop --world-size"
                ),
            });
        }
    }
    if size <= 1 {
        let _ = WORLD.set(World::ALONE);
        return Ok(Guard {
            #[cfg(feature = "mpi")]
            _universe: None,
        });
    }
    init_mpi(size)
}

#[cfg(feature = "mpi")]
fn init_mpi(size: usize) -> Result<Guard, String> {
    use mpi::topology::Communicator;
    let universe =
        mpi::initialize().ok_or_else(|| "MPI was initialised twice in one process".to_string())?;
    let comm = universe.world();
    let (rank, got) = (comm.rank() as usize, comm.size() as usize);
    if got != size {
        return Err(format!(
            "the launcher announced {size} processes but MPI's world has {got}: \
             was ferrochat built against another MPI than the mpirun that started it?"
        ));
    }
    let _ = WORLD.set(World { rank, size });
    Ok(Guard {
        _universe: Some(universe),
    })
}

#[cfg(not(feature = "mpi"))]
fn init_mpi(size: usize) -> Result<Guard, String> {
    Err(format!(
        "started by an MPI launcher with {size} processes, but this ferrochat was built \
         without MPI: rebuild with `cargo build --release --features mpi` (needs an MPI \
         library such as Debian's libopenmpi-dev, and libclang)"
    ))
}

impl World {
    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Rank 0 logs, evaluates and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Replaces `buf` on every rank by the element-wise sum over ranks.
    pub fn sum_f32(&self, buf: &mut [f32]) {
        if self.size > 1 {
            imp::sum_f32(buf);
        }
    }

    /// As [`World::sum_f32`], in double precision (for counts and loss sums).
    pub fn sum_f64(&self, buf: &mut [f64]) {
        if self.size > 1 {
            imp::sum_f64(buf);
        }
    }

    /// Replaces `buf` on every rank by rank 0's.
    pub fn broadcast_f32(&self, buf: &mut [f32]) {
        if self.size > 1 {
            imp::broadcast_f32(buf);
        }
    }

    /// Every rank's `local` one after another, rank 0's first; every rank must give as
    /// many values.
    pub fn gather_f64(&self, local: &[f64]) -> Vec<f64> {
        if self.size == 1 {
            return local.to_vec();
        }
        let n = local.len();
        let mut counts = [n as f64];
        self.sum_f64(&mut counts);
        assert_eq!(
            counts[0],
            (n * self.size) as f64,
            "gather_f64: the ranks gave different numbers of values"
        );
        let mut all = vec![0.0; n * self.size];
        all[self.rank * n..(self.rank + 1) * n].copy_from_slice(local);
        self.sum_f64(&mut all);
        all
    }
}

/// This rank's share of a global batch that every rank draws alike from the same seeded
/// stream: of `per_rank * ranks` draws, the `per_rank` at this rank's place. One process
/// alone keeps them all, so a run of N ranks with batch b sees what one process with
/// batch N * b sees.
pub fn my_share<T>(world: World, per_rank: usize, mut draw: impl FnMut() -> T) -> Vec<T> {
    let mut mine = Vec::with_capacity(per_rank);
    for i in 0..per_rank * world.size() {
        let x = draw();
        if i / per_rank == world.rank() {
            mine.push(x);
        }
    }
    mine
}

/// A stage's resume key with the world size added when there is more than one rank: the
/// global batch grows with it, so a run resumes only with the size it started with (a
/// one-process run's key is unchanged).
pub fn keyed(mut key: serde_json::Value) -> serde_json::Value {
    let size = world().size();
    if size > 1 {
        key["world_size"] = size.into();
    }
    key
}

/// Every rank takes rank 0's values of `vars` (a fresh start is identical anyway when
/// the seed is; this also makes it so when it is not), and all must stand at `step`:
/// ranks resuming from different checkpoints would train apart.
pub fn sync_start(world: World, vars: &[(String, Var)], step: u64) -> candle_core::Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    let mut steps = [step as f64];
    world.sum_f64(&mut steps);
    if steps[0] != (step * world.size() as u64) as f64 {
        candle_core::bail!(
            "the {} ranks start from different steps (this one from {step}): every rank \
             must see the same checkpoint folder to resume",
            world.size()
        );
    }
    for (_, v) in vars {
        let t = v.as_tensor();
        let mut buf = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        world.broadcast_f32(&mut buf);
        let synced = Tensor::from_vec(buf, t.shape(), t.device())?.to_dtype(t.dtype())?;
        v.set(&synced)?;
    }
    Ok(())
}

/// Fails on a rank whose `vars` are no longer rank 0's: the ranks apply the same averaged
/// gradients, so their weights stay equal to the bit, and a difference means a rank
/// trained on something the others did not (a bug worth an error, not a silent drift).
pub fn check_in_sync(world: World, vars: &[(String, Var)]) -> candle_core::Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    let mut sums = Vec::with_capacity(vars.len());
    for (_, v) in vars {
        let t = v.as_tensor().to_dtype(DType::F32)?;
        sums.push(t.sum_all()?.to_scalar::<f32>()?);
    }
    let mine = sums.clone();
    world.broadcast_f32(&mut sums);
    if let Some(i) = (0..vars.len()).find(|&i| sums[i].to_bits() != mine[i].to_bits()) {
        candle_core::bail!(
            "rank {} drifted from rank 0: `{}` sums to {} here and {} there",
            world.rank(),
            vars[i].0,
            mine[i],
            sums[i]
        );
    }
    Ok(())
}

/// Averages the gradients of `vars` over the ranks in one all-reduce, as one process
/// with every rank's micro-batches would have them (a variable without a gradient
/// counts as zero, so every rank packs the same layout).
pub fn average_grads(
    world: World,
    grads: &mut GradStore,
    vars: &[(String, Var)],
) -> candle_core::Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    #[cfg(feature = "nccl")]
    if vars.first().is_some_and(|(_, v)| v.device().is_cuda()) {
        return nccl::average_grads(grads, vars);
    }
    let total: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut buf = Vec::with_capacity(total);
    for (_, v) in vars {
        match grads.get(v.as_tensor()) {
            Some(g) => buf.extend(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => buf.resize(buf.len() + v.elem_count(), 0.0),
        }
    }
    world.sum_f32(&mut buf);
    let scale = 1.0 / world.size() as f32;
    let mut at = 0;
    for (_, v) in vars {
        let t = v.as_tensor();
        let n = t.elem_count();
        let part: Vec<f32> = buf[at..at + n].iter().map(|g| g * scale).collect();
        at += n;
        let g = Tensor::from_vec(part, t.shape(), t.device())?.to_dtype(t.dtype())?;
        grads.insert(t, g);
    }
    Ok(())
}

#[cfg(feature = "mpi")]
mod imp {
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::topology::{Communicator, SimpleCommunicator};

    // MPI's all-reduce caps a call at i32::MAX elements; chunks keep big models safe.
    const CHUNK: usize = 1 << 28;

    pub fn sum_f32(buf: &mut [f32]) {
        let comm = SimpleCommunicator::world();
        for part in buf.chunks_mut(CHUNK) {
            let send = part.to_vec();
            comm.all_reduce_into(&send[..], part, SystemOperation::sum());
        }
    }

    pub fn sum_f64(buf: &mut [f64]) {
        let comm = SimpleCommunicator::world();
        for part in buf.chunks_mut(CHUNK) {
            let send = part.to_vec();
            comm.all_reduce_into(&send[..], part, SystemOperation::sum());
        }
    }

    pub fn broadcast_f32(buf: &mut [f32]) {
        let comm = SimpleCommunicator::world();
        for part in buf.chunks_mut(CHUNK) {
            comm.process_at_rank(0).broadcast_into(part);
        }
    }

    #[cfg(feature = "nccl")]
    pub fn broadcast_i8(buf: &mut [i8]) {
        SimpleCommunicator::world()
            .process_at_rank(0)
            .broadcast_into(buf);
    }
}

/// Gradient averaging on the GPUs: every gradient packed into one f32 buffer on the
/// device, averaged over the ranks by one NCCL all-reduce on the stream candle computes
/// on, and unpacked; nothing crosses to the host.
#[cfg(feature = "nccl")]
mod nccl {
    use std::sync::{Mutex, OnceLock};

    use candle_core::backprop::GradStore;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::cuda_backend::{CudaDType, CudaStorage};
    use candle_core::{CustomOp1, DType, Device, Layout, Shape, Tensor, Var};

    /// The communicator: NCCL's handle may be used from any thread, one call at a time,
    /// which the mutex around it ensures.
    struct Shared(Comm);
    // SAFETY: only reached through the mutex below, so never used by two threads at once.
    unsafe impl Send for Shared {}

    static COMM: OnceLock<Mutex<Shared>> = OnceLock::new();

    /// The communicator of this rank's GPU, made on first use: rank 0 draws NCCL's id and
    /// MPI broadcasts it, then every rank joins on the stream of `device`. All ranks get
    /// here at the same step (the first all-reduce), as the collective needs.
    fn comm(device: &Device) -> candle_core::Result<&'static Mutex<Shared>> {
        if let Some(c) = COMM.get() {
            return Ok(c);
        }
        let Device::Cuda(dev) = device else {
            candle_core::bail!("NCCL averages gradients on a GPU, not on {device:?}");
        };
        let world = super::world();
        let mut id = [0i8; 128];
        if world.is_main() {
            let drawn = Id::new().map_err(|e| nccl_error("drawing a rendezvous id", e))?;
            // c_char is i8 here but u8 on other targets (aarch64)
            #[allow(clippy::unnecessary_cast)]
            for (d, s) in id.iter_mut().zip(drawn.internal()) {
                *d = *s as i8;
            }
        }
        super::imp::broadcast_i8(&mut id);
        let id = Id::uninit(id.map(|b| b as _));
        let comm = Comm::from_rank(dev.cuda_stream(), world.rank(), world.size(), id)
            .map_err(|e| nccl_error("joining the ranks", e))?;
        Ok(COMM.get_or_init(|| Mutex::new(Shared(comm))))
    }

    fn nccl_error(what: &str, e: impl std::fmt::Debug) -> candle_core::Error {
        candle_core::Error::Msg(format!(
            "NCCL failed {what}: {e:?} (NCCL_DEBUG=WARN tells more)"
        ))
    }

    /// The mean over the ranks of a contiguous f32 tensor on a GPU.
    struct Average(&'static Mutex<Shared>);

    impl CustomOp1 for Average {
        fn name(&self) -> &'static str {
            "nccl-average"
        }

        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
            candle_core::bail!("the NCCL average runs on a GPU")
        }

        fn cuda_fwd(
            &self,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let Some((from, to)) = l.contiguous_offsets() else {
                candle_core::bail!("the NCCL average needs a contiguous buffer");
            };
            let src = f32::as_cuda_slice(s)?.slice(from..to);
            let mut dst = s.device.alloc_zeros::<f32>(to - from)?;
            let comm = self.0.lock().map_err(|_| {
                candle_core::Error::Msg("a rank panicked during an all-reduce".into())
            })?;
            comm.0
                .all_reduce(&src, &mut dst, &ReduceOp::Avg)
                .map_err(|e| nccl_error("averaging the gradients", e))?;
            Ok((
                CudaStorage::wrap_cuda_slice(dst, s.device.clone()),
                l.shape().clone(),
            ))
        }
    }

    pub fn average_grads(grads: &mut GradStore, vars: &[(String, Var)]) -> candle_core::Result<()> {
        let device = vars[0].1.device().clone();
        let mut parts = Vec::with_capacity(vars.len());
        for (_, v) in vars {
            parts.push(match grads.get(v.as_tensor()) {
                Some(g) => g.to_dtype(DType::F32)?.flatten_all()?,
                None => Tensor::zeros(v.elem_count(), DType::F32, &device)?,
            });
        }
        let packed = Tensor::cat(&parts, 0)?;
        drop(parts);
        let mean = packed.apply_op1_no_bwd(&Average(comm(&device)?))?;
        let mut at = 0;
        for (_, v) in vars {
            let t = v.as_tensor();
            let n = t.elem_count();
            let g = mean
                .narrow(0, at, n)?
                .reshape(t.shape())?
                .to_dtype(t.dtype())?;
            at += n;
            grads.insert(t, g);
        }
        Ok(())
    }
}

#[cfg(not(feature = "mpi"))]
mod imp {
    // A world of more than one rank only exists through `init_mpi`, which fails without
    // the feature, so these are never reached.
    pub fn sum_f32(_: &mut [f32]) {}
    pub fn sum_f64(_: &mut [f64]) {}
    pub fn broadcast_f32(_: &mut [f32]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_without_a_launcher() {
        if launched().is_some() {
            return;
        }
        assert!(init(None).is_ok());
        assert!(init(Some(1)).is_ok());
        let e = init(Some(2)).err().expect("two ranks need a launcher");
        assert!(e.contains("mpirun -np 2"), "{e}");
        let w = world();
        assert_eq!((w.rank(), w.size(), w.is_main()), (0, 1, true));
        let mut n = 0;
        assert_eq!(
            my_share(w, 3, || {
                n += 1;
                n
            }),
            [1, 2, 3]
        );
        // the second of three ranks keeps the middle of each global batch
        let mut n = 0;
        let second = World { rank: 1, size: 3 };
        assert_eq!(
            my_share(second, 2, || {
                n += 1;
                n
            }),
            [3, 4]
        );
        assert_eq!(n, 6, "every rank draws the whole global batch");
        let mut v = [1.0f32, 2.0];
        w.sum_f32(&mut v);
        assert_eq!(v, [1.0, 2.0]);
    }
}
