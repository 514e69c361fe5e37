//! Training: the optimizer, schedules, checkpoints and resume, and one module per stage.

pub mod optim;
