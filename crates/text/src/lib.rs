//! Text in and out of ferrochat: corpora readers (plain text, JSON lines, Parquet),
//! conversations and preference records in the common JSON-lines formats, and the
//! memory-mapped token shards that training reads.

pub mod atomic;
pub mod conversation;
pub mod corpus;
pub mod error;
pub mod prepare;
pub mod records;
pub mod shards;

pub use atomic::write_atomic;
pub use conversation::{Comparison, Conversation, Message, RankedComparison, Role};
pub use corpus::{for_each_document, CorpusOptions, Document, Source, Stats};
pub use error::{Result, TextError};
pub use prepare::{prepare, prepare_with_progress, EncodeFn, PrepareOptions, ProgressInfo};
pub use records::{
    parse_preference, read_conversations, read_preferences, read_records, BadRecord, OnBad, Records,
};
pub use shards::{Dtype, Manifest, ShardWriter, Split, TokenShards};
