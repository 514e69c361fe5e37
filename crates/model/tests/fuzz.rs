//! Checkpoint loading fed mangled files (proptest): config.json and model.safetensors with
//! bytes changed, inserted, removed or cut off. Loading answers with an error or a model,
//! never a panic, and a size field larger than the file is refused, not allocated.

use std::path::Path;

use candle_core::Device;
use ferrochat_model::{checkpoint, weights, Config, Llama};
use proptest::prelude::*;

fn save(dir: &Path) {
    let cfg = Config::preset("tiny", 64, 32).unwrap();
    let w = weights::init_weights(&cfg, 1, &Device::Cpu).unwrap();
    checkpoint::save(dir, &cfg, &w, &checkpoint::Meta::default(), |_| Ok(())).unwrap();
}

fn mangle(base: &[u8], edits: &[(usize, u8, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, byte, op) in edits {
        let i = at % b.len().max(1);
        match (op % 3, b.is_empty()) {
            (_, true) | (1, _) => b.insert(i.min(b.len()), byte),
            (0, _) => b[i] = byte,
            _ => {
                b.remove(i);
            }
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

fn load_survives(dir: &Path) {
    match checkpoint::load(dir, &Device::Cpu) {
        Ok((cfg, w)) => {
            // what loads either builds a model or says why not
            let _ = Llama::new(&cfg, &w, &Device::Cpu);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn checkpoint_loading_takes_mangled_files(
        file in 0usize..2,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        save(&dir);
        let name = ["config.json", "model.safetensors"][file];
        let path = dir.join(name);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, mangle(&bytes, &edits, cut)).unwrap();
        load_survives(&dir);
    }
}

#[test]
fn a_huge_safetensors_header_length_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    save(&dir);
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let Err(err) = checkpoint::load(&dir, &Device::Cpu) else {
        panic!("a header claiming 2^64 bytes loaded");
    };
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
