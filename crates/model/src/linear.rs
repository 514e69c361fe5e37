//! A projection's weight: dense f32 (what trains, and what the fused CPU kernels read), or
//! quantized to 8 or 4 bits for inference, multiplied by candle's quantized kernels
//! (activations quantized on the fly, integer dot products). One type so the model has
//! one forward for both.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor};

use crate::{ops, Result};

#[derive(Clone)]
pub enum Weight {
    /// (out, in), Hugging Face's layout of a linear weight.
    Dense(Tensor),
    /// The same matrix in a GGML block format (q8_0, q4_0, ...), inference only.
    Quant(Arc<QMatMul>),
}

impl Weight {
    pub fn quantized(q: QTensor) -> Result<Self> {
        Ok(Self::Quant(Arc::new(QMatMul::from_qtensor(q)?)))
    }

    /// `x @ w^T` for x (N, in): (N, out), differentiable when dense.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => Ok(ops::linear(x, w)?),
            Self::Quant(q) => Ok(q.forward(x)?),
        }
    }

    /// The same for a few rows, as one decoding step has: the small-batch kernel for
    /// dense weights (no repacking), the quantized kernel otherwise.
    pub fn forward_rows(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => Ok(ops::linear_rows(x, w)?),
            Self::Quant(q) => Ok(q.forward(x)?),
        }
    }
}
