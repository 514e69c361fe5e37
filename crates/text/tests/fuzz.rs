//! The readers of user files, fed mangled input (proptest): dialogue and preference
//! records, and token shards with their manifest. Each must answer with a result, never
//! panic, and never trust a size field past the file's real length.

use std::path::Path;

use ferrochat_text::{
    read_conversations, read_preferences, OnBad, ShardWriter, Split, TokenShards,
};
use proptest::prelude::*;

const GOOD: &[&str] = &[
    r#"{"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"4"}]}"#,
    r#"{"messages":[{"role":"system","content":"brief"},{"role":"user","content":"法国的首都是？"},{"role":"assistant","content":"巴黎。"}]}"#,
    r#"{"prompt":[{"role":"user","content":"q"}],"chosen":"good","rejected":"bad"}"#,
    r#"{"prompt":"q2","ranked":["a","b","c"]}"#,
];

/// A good file with random bytes changed, inserted and removed.
fn mangle(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, byte, op) in edits {
        if b.is_empty() {
            b.push(byte);
            continue;
        }
        let i = at % b.len();
        match op % 3 {
            0 => b[i] = byte,
            1 => b.insert(i, byte),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

fn records_survive(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    std::fs::write(&path, bytes).unwrap();
    // every outcome is a read or an error naming the file, never a panic
    let named = |e: &dyn std::fmt::Display| {
        let m = e.to_string();
        assert!(
            m.contains("records.jsonl"),
            "an error that does not name the file: {m}"
        );
    };
    for on_bad in [OnBad::Skip, OnBad::Fail] {
        match read_conversations(&path, on_bad) {
            Ok(c) => assert!(c.bad.iter().all(|b| b.line >= 1), "{:?}", c.bad),
            Err(e) => named(&e),
        }
        match read_preferences(&path, on_bad) {
            Ok(c) => assert!(c.bad.iter().all(|b| b.line >= 1), "{:?}", c.bad),
            Err(e) => named(&e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn records_readers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        records_survive(&bytes);
    }

    #[test]
    fn records_readers_take_mangled_records(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12),
    ) {
        let base = GOOD.join("\n");
        records_survive(&mangle(base.as_bytes(), &edits));
    }

    #[test]
    fn shard_reader_takes_mangled_shards_and_manifests(
        target in 0usize..2,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_shards(dir.path());
        let file = if target == 0 { "manifest.json" } else { first_shard(dir.path()) };
        let path = dir.path().join(file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, mangle(&bytes, &edits)).unwrap();
        read_all(dir.path());
    }
}

fn write_shards(dir: &Path) {
    let mut w = ShardWriter::create(dir, 300, Some(0), 50).unwrap();
    for d in 0..12u32 {
        let doc: Vec<u32> = (0..17).map(|i| (d * 31 + i) % 300).collect();
        let split = if d % 4 == 0 { Split::Val } else { Split::Train };
        w.write_document(split, &doc, 40).unwrap();
    }
    w.finish("test", &["x".into()]).unwrap();
}

fn first_shard(dir: &Path) -> &'static str {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    names.sort();
    Box::leak(names.remove(0).into_boxed_str())
}

fn read_all(dir: &Path) {
    for split in [Split::Train, Split::Val] {
        if let Ok(s) = TokenShards::open(dir, split) {
            let mut out = Vec::new();
            let _ = s.read(0, s.len().min(10_000) as usize, &mut out);
        }
    }
}

#[test]
fn a_huge_token_count_in_a_shard_header_is_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path());
    let path = dir.path().join(first_shard(dir.path()));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let err = TokenShards::open(dir.path(), Split::Train)
        .err()
        .expect("a shard claiming 2^64 tokens is refused");
    assert!(
        err.to_string()
            .contains(&path.file_name().unwrap().to_string_lossy().into_owned()),
        "{err}"
    );
}
