//! AdamW (fused) and gradient clipping.
