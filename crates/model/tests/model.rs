//! The model end to end: cached generation equals full recompute, checkpoints round-trip,
//! and bad checkpoints are refused with a message that says what is wrong.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ferrochat_model::{checkpoint, weights, Config, Llama};

fn tiny() -> Config {
    Config::preset("tiny", 97, 64).unwrap()
}

fn model(cfg: &Config, seed: u64) -> (Llama, HashMap<String, Tensor>) {
    let w = weights::init_weights(cfg, seed, &Device::Cpu).unwrap();
    (Llama::new(cfg, &w, &Device::Cpu).unwrap(), w)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn kv_cache_logits_equal_full_recompute() {
    let cfg = tiny();
    let (m, _) = model(&cfg, 1);
    let ids: Vec<u32> = (0..12).map(|i| (i * 7 + 3) % 97).collect();
    let full = m
        .forward(
            &Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap();
    let mut cache = m.new_cache();
    // a 5-token prompt, then one token at a time
    let prompt = Tensor::new(&ids[..5], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let first = m.forward_cached(&prompt, &mut cache).unwrap();
    assert!(max_diff(&first.squeeze(0).unwrap(), &full.get(4).unwrap()) < 1e-5);
    for (i, &id) in ids.iter().enumerate().skip(5) {
        let step = Tensor::new(&[id], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = m.forward_cached(&step, &mut cache).unwrap();
        let d = max_diff(&logits.squeeze(0).unwrap(), &full.get(i).unwrap());
        assert!(d < 1e-4, "position {i}: {d}");
    }
    assert_eq!(cache.len(), ids.len());
}

#[test]
fn same_seed_same_weights_other_seed_differs() {
    let cfg = tiny();
    let a = weights::init_weights(&cfg, 3, &Device::Cpu).unwrap();
    let b = weights::init_weights(&cfg, 3, &Device::Cpu).unwrap();
    let c = weights::init_weights(&cfg, 4, &Device::Cpu).unwrap();
    let k = "model.layers.0.self_attn.q_proj.weight";
    assert_eq!(max_diff(&a[k], &b[k]), 0.0);
    assert!(max_diff(&a[k], &c[k]) > 0.0);
}

#[test]
fn checkpoint_round_trip_gives_identical_logits() {
    let cfg = tiny();
    let (m, w) = model(&cfg, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base");
    let meta = checkpoint::Meta {
        stage: "pretrain".into(),
        step: 7,
        ..Default::default()
    };
    checkpoint::save(&path, &cfg, &w, &meta, |_| Ok(())).unwrap();
    let (cfg2, w2) = checkpoint::load(&path, &Device::Cpu).unwrap();
    assert_eq!(cfg2, cfg);
    let m2 = Llama::new(&cfg2, &w2, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&m.forward(&ids).unwrap(), &m2.forward(&ids).unwrap()),
        0.0
    );
    assert_eq!(checkpoint::load_meta(&path).unwrap().step, 7);
    // config.json reads as a Hugging Face Llama config
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["architectures"][0], "LlamaForCausalLM");
    assert_eq!(json["model_type"], "llama");
}

#[test]
fn wrong_shape_and_missing_tensor_are_named() {
    let cfg = tiny();
    let (_, mut w) = model(&cfg, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad");
    w.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((3, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    w.remove("model.norm.weight");
    checkpoint::save(&path, &cfg, &w, &Default::default(), |_| Ok(())).unwrap();
    let err = checkpoint::load(&path, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("[3, 3]"),
        "{err}"
    );
    assert!(err.contains("missing tensor `model.norm.weight`"), "{err}");
}

#[test]
fn corrupt_weights_and_missing_folder_are_clear_errors() {
    let cfg = tiny();
    let (_, w) = model(&cfg, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    checkpoint::save(&path, &cfg, &w, &Default::default(), |_| Ok(())).unwrap();
    let st = path.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(&path, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("not a readable"),
        "{err}"
    );
    let err = checkpoint::load(&dir.path().join("nope"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_swap_cut_between_renames_recovers_the_previous_checkpoint() {
    let cfg = tiny();
    let (_, w) = model(&cfg, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck");
    let meta = checkpoint::Meta {
        step: 1,
        ..Default::default()
    };
    checkpoint::save(&path, &cfg, &w, &meta, |_| Ok(())).unwrap();
    // simulate a kill after `dir -> dir.old` and before `staging -> dir`
    std::fs::rename(&path, dir.path().join("ck.old")).unwrap();
    std::fs::create_dir(dir.path().join("ck.partial")).unwrap();
    let (_, w2) = checkpoint::load(&path, &Device::Cpu).unwrap();
    assert_eq!(w2.len(), w.len());
    assert_eq!(checkpoint::load_meta(&path).unwrap().step, 1);
    // and a kill while staging leaves the old folder untouched and loadable
    let meta = checkpoint::Meta {
        step: 2,
        ..Default::default()
    };
    let r = checkpoint::save(&path, &cfg, &w, &meta, |_| {
        Err(ferrochat_model::ModelError::Io("killed".into()))
    });
    assert!(r.is_err());
    assert_eq!(checkpoint::load_meta(&path).unwrap().step, 1);
}

#[test]
fn scoring_model_reads_the_last_real_token_and_round_trips() {
    let cfg = tiny();
    let (_, w) = model(&cfg, 3);
    let (rm_cfg, mut rw) = weights::trunk_with_score(&cfg, w, &Device::Cpu).unwrap();
    assert!(rm_cfg.is_classifier());
    // A non-zero head so scores differ between positions.
    let head: Vec<f32> = (0..cfg.hidden_size)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    rw.insert(
        "score.weight".into(),
        Tensor::from_vec(head, (1, cfg.hidden_size), &Device::Cpu).unwrap(),
    );
    let rm = Llama::new(&rm_cfg, &rw, &Device::Cpu).unwrap();
    let row = [5u32, 9, 11, 2, 7, 7];
    let ids = Tensor::new(&[row, row], &Device::Cpu).unwrap();
    let s: Vec<f32> = rm.scores(&ids, &[3, 5]).unwrap().to_vec1().unwrap();
    // The score at position 3 is the score of the first four tokens alone (causal).
    let short = Tensor::new(&[[5u32, 9, 11, 2]], &Device::Cpu).unwrap();
    let s3: Vec<f32> = rm.scores(&short, &[3]).unwrap().to_vec1().unwrap();
    assert!((s[0] - s3[0]).abs() < 1e-5, "{s:?} vs {s3:?}");
    assert!((s[0] - s[1]).abs() > 1e-4);
    assert!(rm
        .logits(
            &Tensor::zeros((1, cfg.hidden_size), candle_core::DType::F32, &Device::Cpu).unwrap()
        )
        .is_err());
    assert!(rm.scores(&ids, &[6, 0]).is_err());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rm");
    checkpoint::save(&out, &rm_cfg, &rw, &Default::default(), |_| Ok(())).unwrap();
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(text.contains("LlamaForSequenceClassification") && text.contains("LABEL_0"));
    let (c2, w2) = checkpoint::load(&out, &Device::Cpu).unwrap();
    let rm2 = Llama::new(&c2, &w2, &Device::Cpu).unwrap();
    let again: Vec<f32> = rm2.scores(&ids, &[3, 5]).unwrap().to_vec1().unwrap();
    assert_eq!(s, again);
}
