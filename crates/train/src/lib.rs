//! Training: the optimizer, schedules, checkpoints and resume, and one module per stage.

pub mod dist;
pub mod distill;
pub mod dpo;
pub mod epochs;
pub mod hooks;
pub mod optim;
pub mod pg;
pub mod policy;
pub mod pref;
pub mod pretrain;
pub mod reward;
pub mod rl;
pub mod schedule;
pub mod sft;
pub mod state;
pub mod trainer;

pub use distill::{distill, DistillOptions, DistillSummary, KlKind};
pub use dpo::{dpo, DpoOptions, DpoSummary};
pub use hooks::{rank_zero, ConsoleHooks, EvalReport, Hooks, Silent, StepReport};
pub use pg::{Algo, ModelReward, PgInputs, PgOptions, PgSummary, Reward};
pub use pretrain::{pretrain, MoeOptions, PretrainOptions, PretrainSummary};
pub use reward::{reward, RewardOptions, RewardSummary, RmEval};
pub use schedule::{Schedule, ScheduleKind};
pub use sft::{sft, PackStats, Rows, SftOptions, SftSummary};

/// Errors of a training run; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Data(String),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Model(#[from] ferrochat_model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Text(#[from] ferrochat_text::TextError),
    #[error(transparent)]
    Tokenizer(#[from] ferrochat_tokenizer::TokenizerError),
}

pub type Result<T> = std::result::Result<T, TrainError>;
