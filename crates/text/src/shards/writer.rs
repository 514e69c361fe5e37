//! Writes token shards and the manifest. Every file is written under a temporary
//! name in the same folder, synced and then renamed, so a crash never leaves a
//! half-written file under a real name; the manifest comes last and marks the
//! folder complete.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{
    is_shard_file_name, shard_file_name, Dtype, Header, Manifest, ShardInfo, Split, SplitInfo,
    FORMAT_VERSION, MANIFEST_FILE,
};
use crate::error::{Result, TextError};

/// Writes the train and val shards of one prepared folder.
pub struct ShardWriter {
    dir: PathBuf,
    vocab_size: u32,
    dtype: Dtype,
    bos_id: Option<u32>,
    max_tokens_per_shard: u64,
    train: SplitWriter,
    val: SplitWriter,
    scratch: Vec<u8>,
}

/// The shards of one split, the last one still open.
struct SplitWriter {
    info: SplitInfo,
    open: Option<OpenShard>,
}

struct OpenShard {
    tmp: PathBuf,
    file: BufWriter<File>,
    name: String,
    tokens: u64,
}

impl ShardWriter {
    /// Starts a prepared folder at `dir` (created if needed). A previous
    /// manifest and shard files there are removed first, so the folder never
    /// mixes two runs.
    pub fn create(
        dir: &Path,
        vocab_size: u32,
        bos_id: Option<u32>,
        max_tokens_per_shard: u64,
    ) -> Result<ShardWriter> {
        if vocab_size == 0 || max_tokens_per_shard == 0 {
            return Err(TextError::InvalidOption(
                "vocab_size and max_tokens_per_shard must be positive".to_string(),
            ));
        }
        if let Some(bos) = bos_id.filter(|&b| b >= vocab_size) {
            return Err(TextError::InvalidOption(format!(
                "bos id {bos} is outside the vocabulary (size {vocab_size})"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| TextError::write(dir, e))?;
        remove_previous_run(dir)?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            vocab_size,
            dtype: Dtype::for_vocab(vocab_size),
            bos_id,
            max_tokens_per_shard,
            train: SplitWriter::new(),
            val: SplitWriter::new(),
            scratch: Vec::new(),
        })
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// What has been written to `split` so far.
    pub fn split_info(&self, split: Split) -> &SplitInfo {
        match split {
            Split::Train => &self.train.info,
            Split::Val => &self.val.info,
        }
    }

    /// Appends one document's tokens (its BOS included, if it has one) to
    /// `split`; `source_bytes` is the length of its text, for bits per byte. A
    /// document may straddle two shards: readers see one stream per split.
    pub fn write_document(
        &mut self,
        split: Split,
        tokens: &[u32],
        source_bytes: u64,
    ) -> Result<()> {
        let w = match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
        };
        if let Some(&id) = tokens.iter().find(|&&id| id >= self.vocab_size) {
            return Err(TextError::TokenOutOfRange {
                id,
                vocab_size: self.vocab_size,
                source_doc: format!("{split} document {}", w.info.documents),
            });
        }
        let mut rest = tokens;
        while !rest.is_empty() {
            if w.open.is_none() {
                w.open = Some(open_shard(
                    &self.dir,
                    split,
                    w.info.shards.len(),
                    self.dtype,
                )?);
            }
            let Some(shard) = w.open.as_mut() else { break };
            let room = (self.max_tokens_per_shard - shard.tokens).min(rest.len() as u64) as usize;
            let (now, later) = rest.split_at(room);
            encode(self.dtype, now, &mut self.scratch);
            shard
                .file
                .write_all(&self.scratch)
                .map_err(|e| TextError::write(&shard.tmp, e))?;
            shard.tokens += now.len() as u64;
            rest = later;
            if shard.tokens == self.max_tokens_per_shard {
                w.close_shard(&self.dir, self.dtype)?;
            }
        }
        w.info.documents += 1;
        w.info.tokens += tokens.len() as u64;
        w.info.source_bytes += source_bytes;
        Ok(())
    }

    /// Closes the last shards and writes `manifest.json`.
    pub fn finish(mut self, tokenizer: &str, inputs: &[String]) -> Result<Manifest> {
        self.train.close_shard(&self.dir, self.dtype)?;
        self.val.close_shard(&self.dir, self.dtype)?;
        let train = std::mem::take(&mut self.train.info);
        let val = std::mem::take(&mut self.val.info);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            vocab_size: self.vocab_size,
            dtype: self.dtype,
            bos_id: self.bos_id,
            tokenizer: tokenizer.to_string(),
            inputs: inputs.to_vec(),
            documents: train.documents + val.documents,
            source_bytes: train.source_bytes + val.source_bytes,
            train,
            val,
        };
        let path = self.dir.join(MANIFEST_FILE);
        let mut json = serde_json::to_vec_pretty(&manifest).map_err(|e| TextError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        json.push(b'\n');
        write_atomic(&path, &json)?;
        Ok(manifest)
    }
}

impl Drop for ShardWriter {
    /// An abandoned run removes its temporary files; finished shards stay, but
    /// without a manifest no reader will take them for a complete folder.
    fn drop(&mut self) {
        for w in [&mut self.train, &mut self.val] {
            if let Some(shard) = w.open.take() {
                drop(shard.file);
                let _ = std::fs::remove_file(&shard.tmp);
            }
        }
    }
}

impl SplitWriter {
    fn new() -> Self {
        SplitWriter {
            info: SplitInfo::default(),
            open: None,
        }
    }

    /// Writes the open shard's header, syncs it and gives it its real name.
    fn close_shard(&mut self, dir: &Path, dtype: Dtype) -> Result<()> {
        let Some(shard) = self.open.take() else {
            return Ok(());
        };
        let tmp = shard.tmp.clone();
        let mut file = shard
            .file
            .into_inner()
            .map_err(|e| TextError::write(&tmp, e.into_error()))?;
        let header = Header {
            dtype,
            tokens: shard.tokens,
        };
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header.encode()))
            .and_then(|_| file.sync_all())
            .map_err(|e| TextError::write(&tmp, e))?;
        drop(file);
        let path = dir.join(&shard.name);
        std::fs::rename(&tmp, &path).map_err(|e| TextError::write(&path, e))?;
        crate::atomic::sync_dir(dir);
        self.info.shards.push(ShardInfo {
            file: shard.name,
            tokens: shard.tokens,
        });
        Ok(())
    }
}

fn open_shard(dir: &Path, split: Split, index: usize, dtype: Dtype) -> Result<OpenShard> {
    let name = shard_file_name(split, index);
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(|e| TextError::write(&tmp, e))?;
    let mut file = BufWriter::with_capacity(1 << 20, file);
    // A placeholder: the count is known only when the shard is closed.
    let header = Header { dtype, tokens: 0 };
    file.write_all(&header.encode())
        .map_err(|e| TextError::write(&tmp, e))?;
    Ok(OpenShard {
        tmp,
        file,
        name,
        tokens: 0,
    })
}

/// Little-endian bytes of `tokens` in `dtype` (ids already checked to fit).
fn encode(dtype: Dtype, tokens: &[u32], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(tokens.len() * dtype.width());
    match dtype {
        Dtype::U16 => out.extend(tokens.iter().flat_map(|&t| (t as u16).to_le_bytes())),
        Dtype::U32 => out.extend(tokens.iter().flat_map(|&t| t.to_le_bytes())),
    }
}

/// [`crate::atomic::write_atomic`] with the error naming the file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write_atomic(path, bytes).map_err(|e| TextError::write(path, e))
}

fn remove_previous_run(dir: &Path) -> Result<()> {
    let manifest = dir.join(MANIFEST_FILE);
    // The manifest goes first: from here on the folder reads as incomplete.
    match std::fs::remove_file(&manifest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TextError::write(&manifest, e)),
    }
    for entry in std::fs::read_dir(dir).map_err(|e| TextError::read(dir, e))? {
        let entry = entry.map_err(|e| TextError::read(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = is_shard_file_name(&name)
            || name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .is_some_and(|n| is_shard_file_name(n) || n == MANIFEST_FILE);
        if ours {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| TextError::write(&path, e))?;
        }
    }
    Ok(())
}
