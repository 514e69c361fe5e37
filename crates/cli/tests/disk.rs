//! A full disk and a read-only run folder: the run stops with an error that says what and
//! where, and the last good checkpoint stays whole and loadable. The folder is a small
//! tmpfs mounted for the test (root with CAP_SYS_ADMIN, as on the test machines; without
//! that the test says it was skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, logits};

/// A tmpfs of `size` at `at`, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }

    fn read_only(&self) {
        let s = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn step_of(dir: &Path) -> u64 {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    meta["step"].as_u64().unwrap()
}

#[test]
fn a_full_disk_or_a_read_only_folder_stops_the_run_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::prepared(tmp.path(), &common::SMALL);
    let Some(mount) = Mount::new(&tmp.path().join("small_disk"), "2m") else {
        eprintln!("!!! SKIPPED: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN) !!!");
        return;
    };
    let out = mount.0.join("run");
    let pretrain = |steps: &str, resume: bool| {
        let mut c = bin();
        c.args(["pretrain", "--quiet", "--preset", "tiny", "--seq", "64"])
            .args([
                "--steps",
                steps,
                "--checkpoint-every",
                "5",
                "--eval-every",
                "0",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--output")
            .arg(&out)
            .stdout(std::process::Stdio::null());
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };

    // 2 MB hold one checkpoint of this model (1.9 MB with the optimizer state) but not
    // a second beside it while it is written
    let o = pretrain("30", false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("previous checkpoint") && err.contains("untouched"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        step_of(&out),
        5,
        "the last good checkpoint is the one on disk"
    );
    assert!(logits(&out).contains('['));
    assert!(
        !mount.0.join("run.partial").exists(),
        "the half-written checkpoint was cleared, freeing the space"
    );

    // read-only: refused at the start, before any training, and nothing changes
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    mount.read_only();
    let o = pretrain("30", true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains(&out.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    assert!(logits(&out).contains('['));
}
