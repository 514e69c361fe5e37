//! `data prepare`: turns a corpus into train/val token shards. Documents stream
//! from the readers in batches, each batch is tokenized on all cores, and the
//! tokens go to disk in document order, so memory stays bounded by a few batches
//! whatever the corpus size and the output does not depend on thread count or
//! batch size.

mod sink;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use rayon::prelude::*;

use crate::corpus::{discover, for_each_document_in, CorpusOptions, Document, InputFile, Source};
use crate::error::{Result, TextError};
use crate::shards::{Manifest, ShardWriter};

use sink::Sink;

/// A tokenizer as `prepare` sees it: texts in, token ids out, one list per text.
/// It is called from several threads at once.
pub type EncodeFn<'a> = dyn Fn(&[String]) -> std::result::Result<Vec<Vec<u32>>, String> + Sync + 'a;

/// How to prepare a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOptions {
    pub corpus: CorpusOptions,
    /// Ids must be below this; it also picks the shard dtype.
    pub vocab_size: u32,
    /// Prefixed to every document, so the model sees where one starts.
    pub bos_id: Option<u32>,
    /// The chance that a document goes to val, in `[0, 1)`.
    pub val_fraction: f64,
    /// Seeds the train/val draw.
    pub seed: u64,
    pub max_tokens_per_shard: u64,
    /// A batch closes at this many documents or this many bytes of text,
    /// whichever comes first.
    pub batch_documents: usize,
    pub batch_bytes: usize,
    /// Free-form tokenizer description for the manifest.
    pub tokenizer: String,
}

impl PrepareOptions {
    pub fn new(vocab_size: u32, bos_id: Option<u32>) -> PrepareOptions {
        PrepareOptions {
            corpus: CorpusOptions::default(),
            vocab_size,
            bos_id,
            val_fraction: 0.005,
            seed: 0,
            max_tokens_per_shard: 1 << 26,
            batch_documents: 256,
            batch_bytes: 4 << 20,
            tokenizer: String::new(),
        }
    }
}

/// Where a run stands, reported after every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressInfo {
    /// Input file bytes consumed, against `input_bytes_total` (for Parquet it
    /// moves a row group at a time).
    pub input_bytes_read: u64,
    pub input_bytes_total: u64,
    pub documents: u64,
    /// Bytes of document text tokenized.
    pub source_bytes: u64,
    /// Tokens tokenized, BOS included (some may still wait in memory to be
    /// written, see [`prepare`]).
    pub tokens: u64,
}

/// Tokenizes the documents under `inputs` into shards in `out_dir` and returns
/// the manifest written there.
///
/// A document goes to val when a hash of (`seed`, its index in the corpus) falls
/// below `val_fraction`, so the split is the same on every machine. If no
/// document is drawn for val (a small corpus), the last train documents move
/// to val instead: the fewest trailing ones holding `val_fraction` of all
/// tokens, provided train keeps at least one document; so both splits exist
/// whenever `val_fraction > 0` and there are two documents or more.
pub fn prepare(
    inputs: &[PathBuf],
    out_dir: &Path,
    opts: &PrepareOptions,
    encode: &EncodeFn<'_>,
) -> Result<Manifest> {
    prepare_with_progress(inputs, out_dir, opts, encode, &|_| {})
}

/// [`prepare`], calling `progress` after each batch (to draw a bar).
pub fn prepare_with_progress(
    inputs: &[PathBuf],
    out_dir: &Path,
    opts: &PrepareOptions,
    encode: &EncodeFn<'_>,
    progress: &dyn Fn(&ProgressInfo),
) -> Result<Manifest> {
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(TextError::InvalidOption(format!(
            "val fraction {} is outside [0, 1)",
            opts.val_fraction
        )));
    }
    if opts.batch_documents == 0 || opts.batch_bytes == 0 {
        return Err(TextError::InvalidOption(
            "batch_documents and batch_bytes must be positive".to_string(),
        ));
    }
    let files = without_output(discover(inputs)?, out_dir, inputs)?;
    let writer = ShardWriter::create(
        out_dir,
        opts.vocab_size,
        opts.bos_id,
        opts.max_tokens_per_shard,
    )?;
    let mut sink = Sink::new(writer, opts);
    sink.progress.input_bytes_total = files.iter().map(|f| f.size).sum();

    let (tx, rx) = sync_channel::<Batch>(2);
    let (read_result, write_result) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_batches(&files, opts, tx));
        let written = write_batches(rx, &mut sink, encode, progress);
        // The receiver is gone now, so a reader blocked on a full channel wakes up.
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (read, written)
    });
    // A write error explains a stopped reader, so it comes first.
    write_result?;
    read_result?;

    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    sink.finish(&opts.tokenizer, &names)
}

/// Drops the files under `out_dir`: when the output folder sits inside an input
/// folder, a second run would otherwise read the first one's `manifest.json`.
fn without_output(
    files: Vec<InputFile>,
    out_dir: &Path,
    inputs: &[PathBuf],
) -> Result<Vec<InputFile>> {
    let Ok(out) = out_dir.canonicalize() else {
        // Not there yet, so nothing is inside it.
        return Ok(files);
    };
    let files: Vec<InputFile> = files
        .into_iter()
        .filter(|f| !f.path.canonicalize().is_ok_and(|p| p.starts_with(&out)))
        .collect();
    if files.is_empty() {
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(TextError::EmptyInput {
            inputs: format!(
                "{} (outside the output folder {})",
                names.join(", "),
                out_dir.display()
            ),
        });
    }
    Ok(files)
}

/// Documents on their way to the tokenizer.
struct Batch {
    docs: Vec<Document>,
    /// Index of the first document in the whole corpus.
    first_index: u64,
    input_bytes_read: u64,
}

/// The reader thread: streams documents into batches. Stops quietly when the
/// writer has hung up (it failed, and reports why).
fn read_batches(files: &[InputFile], opts: &PrepareOptions, tx: SyncSender<Batch>) -> Result<()> {
    let mut batch = Batch {
        docs: Vec::new(),
        first_index: 0,
        input_bytes_read: 0,
    };
    let mut batch_bytes = 0usize;
    let mut next_index = 0u64;
    let mut done_bytes = 0u64;
    let mut hung_up = false;
    for file in files {
        let result = for_each_document_in(std::slice::from_ref(file), &opts.corpus, |doc| {
            batch_bytes += doc.text.len();
            batch.input_bytes_read = done_bytes + doc.file_bytes_read;
            batch.docs.push(doc);
            next_index += 1;
            if batch.docs.len() >= opts.batch_documents || batch_bytes >= opts.batch_bytes {
                let next = Batch {
                    docs: Vec::new(),
                    first_index: next_index,
                    input_bytes_read: 0,
                };
                if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                    hung_up = true;
                    return Err(TextError::InvalidOption(
                        "the shard writer stopped".to_string(),
                    ));
                }
                batch_bytes = 0;
            }
            Ok(())
        });
        if hung_up {
            return Ok(());
        }
        result?;
        done_bytes += file.size;
    }
    batch.input_bytes_read = done_bytes;
    // Harmless if the writer is gone: it has its own error to report.
    let _ = tx.send(batch);
    Ok(())
}

/// The writing side: tokenizes each batch in parallel, then writes in order.
fn write_batches(
    rx: Receiver<Batch>,
    sink: &mut Sink,
    encode: &EncodeFn<'_>,
    progress: &dyn Fn(&ProgressInfo),
) -> Result<()> {
    let threads = rayon::current_num_threads().max(1);
    for mut batch in rx {
        if batch.docs.is_empty() {
            // The closing batch: only the byte count moves, to the end.
            sink.progress.input_bytes_read = batch.input_bytes_read;
            progress(&sink.progress);
            continue;
        }
        let texts: Vec<String> = batch
            .docs
            .iter_mut()
            .map(|d| std::mem::take(&mut d.text))
            .collect();
        // A few chunks per thread balance documents of uneven length.
        let chunk = texts.len().div_ceil(threads * 4).max(1);
        let encoded: Vec<Result<Vec<Vec<u32>>>> = texts
            .par_chunks(chunk)
            .enumerate()
            .map(|(i, texts)| {
                let source = &batch.docs[i * chunk].source;
                let ids = encode(texts).map_err(|message| encode_error(source, message))?;
                if ids.len() != texts.len() {
                    let message = format!(
                        "returned {} token lists for {} texts",
                        ids.len(),
                        texts.len()
                    );
                    return Err(encode_error(source, message));
                }
                Ok(ids)
            })
            .collect();
        let mut index = batch.first_index;
        let mut docs = batch.docs.iter().zip(&texts);
        for ids in encoded {
            for ids in ids? {
                let Some((doc, text)) = docs.next() else {
                    break;
                };
                sink.add(index, &doc.source, ids, text.len() as u64)?;
                index += 1;
            }
        }
        sink.progress.input_bytes_read = batch.input_bytes_read;
        progress(&sink.progress);
    }
    Ok(())
}

fn encode_error(source: &Source, message: String) -> TextError {
    TextError::Encode {
        source_doc: source.to_string(),
        message,
    }
}
