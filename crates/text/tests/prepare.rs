//! `prepare` end to end with a byte-level encoder: what goes in comes back out of
//! the shards, the output is the same byte for byte whatever the batching, and
//! both splits exist even for a tiny corpus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrochat_text::prepare::{prepare, prepare_with_progress, PrepareOptions, ProgressInfo};
use ferrochat_text::shards::{Split, TokenShards};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BOS: u32 = 256;

/// One token per byte; BOS sits just above the bytes.
fn bytes_encode(texts: &[String]) -> Result<Vec<Vec<u32>>, String> {
    Ok(texts
        .iter()
        .map(|t| t.bytes().map(u32::from).collect())
        .collect())
}

fn options() -> PrepareOptions {
    let mut opts = PrepareOptions::new(257, Some(BOS));
    opts.val_fraction = 0.2;
    opts.seed = 11;
    opts.max_tokens_per_shard = 1000;
    opts.tokenizer = "bytes".to_string();
    opts
}

/// The documents of a split, cut at the BOS tokens.
fn documents(dir: &Path, split: Split) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let shards = TokenShards::open(dir, split)?;
    let mut ids = Vec::new();
    shards.read(0, shards.len() as usize, &mut ids)?;
    let mut docs = Vec::new();
    for doc in ids.split(|&t| t == BOS).skip(1) {
        let bytes: Vec<u8> = doc.iter().map(|&t| t as u8).collect();
        docs.push(String::from_utf8(bytes)?);
    }
    Ok(docs)
}

/// Every file of a folder, by name.
fn contents(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, std::io::Error> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path())?,
        );
    }
    Ok(out)
}

fn corpus(dir: &Path) -> Result<Vec<String>, std::io::Error> {
    let docs: Vec<String> = (0..300)
        .map(|i| format!("document {i}: {}", "ab ".repeat(i % 17)))
        .collect();
    let lines: Vec<String> = docs[..200]
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    std::fs::write(dir.join("a.jsonl"), lines.join("\n"))?;
    std::fs::create_dir(dir.join("more"))?;
    for (i, d) in docs[200..].iter().enumerate() {
        std::fs::write(dir.join(format!("more/{i:03}.txt")), d)?;
    }
    Ok(docs)
}

#[test]
fn parquet_round_trip() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("in.parquet");
    let texts: Vec<String> = (0..50).map(|i| format!("row {i} héllo")).collect();
    let schema = Arc::new(parse_message_type(
        "message schema { REQUIRED BYTE_ARRAY text (UTF8); }",
    )?);
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(&path)?, schema, props)?;
    for rows in texts.chunks(20) {
        let mut group = writer.next_row_group()?;
        if let Some(mut col) = group.next_column()? {
            let values: Vec<ByteArray> = rows.iter().map(|s| ByteArray::from(s.as_str())).collect();
            col.typed::<ByteArrayType>()
                .write_batch(&values, None, None)?;
            col.close()?;
        }
        group.close()?;
    }
    writer.close()?;

    let out = tmp.path().join("out");
    let manifest = prepare(&[path], &out, &options(), &bytes_encode)?;
    let mut got = documents(&out, Split::Train)?;
    let val = documents(&out, Split::Val)?;
    assert!(!val.is_empty() && !got.is_empty());
    assert_eq!(manifest.val.documents as usize, val.len());
    got.extend(val);
    got.sort();
    let mut want = texts.clone();
    want.sort();
    assert_eq!(got, want);
    let bytes: usize = texts.iter().map(String::len).sum();
    assert_eq!(manifest.source_bytes as usize, bytes);
    assert_eq!(
        manifest.train.tokens + manifest.val.tokens,
        (bytes + texts.len()) as u64
    );
    Ok(())
}

#[test]
fn output_is_deterministic_and_independent_of_batching() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let docs = corpus(tmp.path())?;
    let inputs = vec![tmp.path().join("a.jsonl"), tmp.path().join("more")];
    let first = tmp.path().join("out1");
    let manifest = prepare(&inputs, &first, &options(), &bytes_encode)?;
    assert!(manifest.train.shards.len() > 3);
    assert_eq!(manifest.documents, 300);

    let mut train = documents(&first, Split::Train)?;
    let val = documents(&first, Split::Val)?;
    assert!((30..90).contains(&val.len()), "{} val documents", val.len());
    // Order is kept within each split.
    let position = |d: &String| docs.iter().position(|x| x == d);
    let train_pos: Vec<_> = train.iter().map(position).collect();
    assert!(train_pos.windows(2).all(|w| w[0] < w[1]));
    train.extend(val);
    assert_eq!(train.len(), docs.len());

    let want = contents(&first)?;
    for (batch_documents, batch_bytes) in [(1, 1 << 20), (7, 100), (10_000, 1 << 30)] {
        let out = tmp
            .path()
            .join(format!("out_{batch_documents}_{batch_bytes}"));
        let mut opts = options();
        opts.batch_documents = batch_documents;
        opts.batch_bytes = batch_bytes;
        prepare(&inputs, &out, &opts, &bytes_encode)?;
        let got = contents(&out)?;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        assert!(
            got == want,
            "output differs with batches of {batch_documents} docs / {batch_bytes} bytes"
        );
    }
    Ok(())
}

#[test]
fn tiny_corpus_still_gets_a_val_split() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let docs = ["first document, quite long", "second", "third one"];
    for (i, d) in docs.iter().enumerate() {
        std::fs::write(tmp.path().join(format!("{i}.txt")), d)?;
    }
    let out = tmp.path().join("out");
    let mut opts = options();
    opts.val_fraction = 1e-9;
    let manifest = prepare(&[tmp.path().to_path_buf()], &out, &opts, &bytes_encode)?;
    assert_eq!(documents(&out, Split::Val)?, ["third one"]);
    assert_eq!(
        documents(&out, Split::Train)?,
        ["first document, quite long", "second"]
    );
    assert_eq!(manifest.val.source_bytes, 9);

    // One document cannot be split: it stays in train.
    let single = tmp.path().join("0.txt");
    let manifest = prepare(&[single], &out, &opts, &bytes_encode)?;
    assert_eq!((manifest.train.documents, manifest.val.documents), (1, 0));
    assert!(TokenShards::open(&out, Split::Val)?.is_empty());
    Ok(())
}

#[test]
fn progress_and_errors_reach_the_caller() -> TestResult {
    let tmp = tempfile::tempdir()?;
    corpus(tmp.path())?;
    let inputs: Vec<PathBuf> = vec![tmp.path().join("a.jsonl")];
    let seen = std::sync::Mutex::new(Vec::<ProgressInfo>::new());
    let record = |p: &ProgressInfo| {
        if let Ok(mut s) = seen.lock() {
            s.push(p.clone());
        }
    };
    let mut opts = options();
    opts.batch_documents = 50;
    prepare_with_progress(
        &inputs,
        &tmp.path().join("out"),
        &opts,
        &bytes_encode,
        &record,
    )?;
    let seen = seen.into_inner().map_err(|e| e.to_string())?;
    assert!(seen.len() >= 4, "{} progress reports", seen.len());
    let last = &seen[seen.len() - 1];
    assert_eq!(last.documents, 200);
    assert_eq!(last.input_bytes_read, last.input_bytes_total);

    let failing = |_: &[String]| -> Result<Vec<Vec<u32>>, String> { Err("boom".to_string()) };
    let msg = prepare(&inputs, &tmp.path().join("bad"), &opts, &failing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("tokenizer failed") && msg.contains("a.jsonl:") && msg.contains("boom"),
        "{msg}"
    );
    assert!(!tmp.path().join("bad/manifest.json").exists());

    let too_big = |t: &[String]| -> Result<Vec<Vec<u32>>, String> {
        Ok(t.iter().map(|_| vec![300]).collect())
    };
    let msg = prepare(&inputs, &tmp.path().join("bad"), &opts, &too_big)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("token id 300 is outside the vocabulary") && msg.contains("a.jsonl:1"),
        "{msg}"
    );

    std::fs::write(
        tmp.path().join("broken.jsonl"),
        "{\"text\":\"ok\"}\n{oops\n",
    )?;
    let msg = prepare(
        &[tmp.path().join("broken.jsonl")],
        &tmp.path().join("bad"),
        &opts,
        &bytes_encode,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(msg.contains("broken.jsonl:2: malformed JSON"), "{msg}");
    Ok(())
}
