//! Tokenizer loading fed a mangled tokenizer.json (proptest): an error naming the file or
//! a tokenizer, never a panic.

use ferrochat_tokenizer::{Tokenizer, TrainOptions};
use proptest::prelude::*;

fn saved() -> (tempfile::TempDir, Vec<u8>) {
    let text: Vec<String> = (0..50).map(|i| format!("word {i} 词{i}")).collect();
    let tok = Tokenizer::train(
        text.into_iter(),
        &TrainOptions {
            vocab_size: 300,
            ..Default::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let bytes = std::fs::read(dir.path().join("tokenizer.json")).unwrap();
    (dir, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn loading_takes_a_mangled_tokenizer_json(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let (dir, mut bytes) = saved();
        for (at, byte) in edits {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        std::fs::write(dir.path().join("tokenizer.json"), &bytes).unwrap();
        match Tokenizer::load(dir.path()) {
            Ok(t) => {
                let _ = t.encode("hello 你好");
            }
            Err(e) => prop_assert!(e.to_string().contains("tokenizer"), "{}", e),
        }
    }
}
