//! Token shards: what the writer writes, the reader reads back, across shard
//! boundaries and in both dtypes, and damaged files fail with messages that
//! name the file and the fault.

use std::path::Path;

use ferrochat_text::shards::{Dtype, ShardWriter, Split, TokenShards};
use ferrochat_text::TextError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Writes `docs` to train (and their reverse to val) with tiny shards; returns
/// the concatenated train stream.
fn write(dir: &Path, vocab: u32, docs: &[Vec<u32>], per_shard: u64) -> Result<Vec<u32>, TextError> {
    let mut w = ShardWriter::create(dir, vocab, Some(0), per_shard)?;
    for d in docs {
        w.write_document(Split::Train, d, d.len() as u64 * 3)?;
    }
    for d in docs.iter().rev() {
        w.write_document(Split::Val, d, 1)?;
    }
    w.finish("test tokenizer", &["in.txt".to_string()])?;
    Ok(docs.concat())
}

fn docs(vocab: u32) -> Vec<Vec<u32>> {
    (0..9u32)
        .map(|i| {
            (0..(i * 3 + 1))
                .map(|j| (i * 7919 + j * 104_729) % vocab)
                .collect()
        })
        .collect()
}

fn round_trip(vocab: u32, dtype: Dtype) -> TestResult {
    let tmp = tempfile::tempdir()?;
    let want = write(tmp.path(), vocab, &docs(vocab), 10)?;
    let train = TokenShards::open(tmp.path(), Split::Train)?;
    assert_eq!(train.manifest().dtype, dtype);
    assert_eq!(train.manifest().tokenizer, "test tokenizer");
    assert_eq!(train.len(), want.len() as u64);
    assert!(
        train.manifest().train.shards.len() > 3,
        "several shards expected"
    );
    for (i, &t) in want.iter().enumerate() {
        assert_eq!(train.get(i as u64), Some(t), "token {i}");
    }
    assert_eq!(train.get(want.len() as u64), None);
    // Every range, so reads start and end on both sides of every boundary.
    for start in 0..want.len() {
        for len in 0..=(want.len() - start).min(25) {
            let mut out = vec![u32::MAX];
            train.read(start as u64, len, &mut out)?;
            assert_eq!(&out[1..], &want[start..start + len], "read({start}, {len})");
        }
    }
    let mut out = Vec::new();
    let err = train
        .read(want.len() as u64 - 2, 3, &mut out)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("outside split \"train\"")));
    assert!((train.bytes_per_token() - 3.0).abs() < 1e-9);

    let val = TokenShards::open(tmp.path(), Split::Val)?;
    let mut all = Vec::new();
    val.read(0, val.len() as usize, &mut all)?;
    let want_val: Vec<u32> = docs(vocab).into_iter().rev().flatten().collect();
    assert_eq!(all, want_val);
    Ok(())
}

#[test]
fn round_trip_u16() -> TestResult {
    round_trip(65_536, Dtype::U16)
}

#[test]
fn round_trip_u32() -> TestResult {
    round_trip(1_000_003, Dtype::U32)
}

#[test]
fn dtype_follows_vocab_size() {
    assert_eq!(Dtype::for_vocab(65_536), Dtype::U16);
    assert_eq!(Dtype::for_vocab(65_537), Dtype::U32);
}

#[test]
fn out_of_vocab_ids_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = ShardWriter::create(tmp.path(), 100, None, 10)?;
    let err = w
        .write_document(Split::Train, &[5, 100], 2)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("token id 100") && e.contains("size 100")));
    Ok(())
}

#[test]
fn truncated_shard_names_file_and_lengths() -> TestResult {
    let tmp = tempfile::tempdir()?;
    write(tmp.path(), 1000, &docs(1000), 10)?;
    let shard = tmp.path().join("train_0001.bin");
    let bytes = std::fs::read(&shard)?;
    std::fs::write(&shard, &bytes[..bytes.len() - 3])?;
    let msg = TokenShards::open(tmp.path(), Split::Train)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("train_0001.bin"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    // 10 u16 tokens after a 32-byte header.
    assert!(
        msg.contains("should be 52 bytes, but it is 49 bytes"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn bad_magic_is_named() -> TestResult {
    let tmp = tempfile::tempdir()?;
    write(tmp.path(), 1000, &docs(1000), 10)?;
    let shard = tmp.path().join("val_0000.bin");
    let mut bytes = std::fs::read(&shard)?;
    bytes[..8].copy_from_slice(b"NOTATOKN");
    std::fs::write(&shard, &bytes)?;
    let msg = TokenShards::open(tmp.path(), Split::Val)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("val_0000.bin: not a ferrochat token shard"),
        "{msg}"
    );
    assert!(msg.contains("NOTATOKN"), "{msg}");
    // The other split is untouched and still opens.
    TokenShards::open(tmp.path(), Split::Train)?;
    Ok(())
}

#[test]
fn missing_manifest_says_so() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let msg = TokenShards::open(tmp.path(), Split::Train)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("manifest.json") && msg.contains("missing"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn a_new_run_clears_the_old_one() -> TestResult {
    let tmp = tempfile::tempdir()?;
    write(tmp.path(), 1000, &docs(1000), 4)?;
    assert!(tmp.path().join("train_0010.bin").exists());
    std::fs::write(tmp.path().join("notes.txt"), "keep me")?;
    write(tmp.path(), 1000, &docs(1000)[..2], 4)?;
    assert!(!tmp.path().join("train_0010.bin").exists());
    assert!(tmp.path().join("notes.txt").exists());
    assert_eq!(TokenShards::open(tmp.path(), Split::Train)?.len(), 5);
    Ok(())
}

/// A split whose token at position p is p, so windows are easy to check.
fn counting(dir: &Path, n: u32) -> Result<TokenShards, TextError> {
    let mut w = ShardWriter::create(dir, 1 << 20, None, 7)?;
    let all: Vec<u32> = (0..n).collect();
    for chunk in all.chunks(5) {
        w.write_document(Split::Train, chunk, 5)?;
    }
    w.finish("", &[])?;
    TokenShards::open(dir, Split::Train)
}

#[test]
fn random_batch_targets_are_inputs_shifted_by_one() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let shards = counting(tmp.path(), 100)?;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (batch, seq) = (16, 9);
    let (inputs, targets) = shards.random_batch(&mut rng, batch, seq)?;
    assert_eq!(inputs.len(), batch * seq);
    assert_eq!(targets.len(), batch * seq);
    for row in 0..batch {
        let x = &inputs[row * seq..(row + 1) * seq];
        let y = &targets[row * seq..(row + 1) * seq];
        assert_eq!(&x[1..], &y[..seq - 1]);
        assert!(x.iter().zip(y).all(|(a, b)| b == &(a + 1)));
        assert!(y[seq - 1] < 100);
    }
    // Same seed, same batch.
    let again = shards.random_batch(&mut ChaCha8Rng::seed_from_u64(3), batch, seq)?;
    assert_eq!(again, (inputs, targets));
    Ok(())
}

#[test]
fn random_batch_needs_one_window() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let shards = counting(tmp.path(), 10)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(shards.random_batch(&mut rng, 2, 9).is_ok());
    let msg = shards
        .random_batch(&mut rng, 2, 10)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("holds 10 tokens, fewer than the 11 needed"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn val_batches_walk_the_split_once() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let shards = counting(tmp.path(), 101)?;
    let batches: Vec<_> = shards.val_batches(3, 10, None)?.collect();
    // 100 predictable tokens -> 10 windows -> batches of 3, 3, 3, 1.
    assert_eq!(
        batches
            .iter()
            .map(|(x, _)| x.len() / 10)
            .collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    let inputs: Vec<u32> = batches.iter().flat_map(|(x, _)| x.clone()).collect();
    let targets: Vec<u32> = batches.iter().flat_map(|(_, y)| y.clone()).collect();
    assert_eq!(inputs, (0..100).collect::<Vec<_>>());
    assert_eq!(targets, (1..101).collect::<Vec<_>>());
    assert_eq!(shards.val_batches(3, 10, Some(2))?.count(), 2);
    Ok(())
}
