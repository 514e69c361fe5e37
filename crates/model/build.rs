//! With the `mkl` feature, links Intel MKL's sequential sgemm statically from the
//! folder `FERROCHAT_MKL_DIR` names (`scripts/mkl.sh` fills one from PyPI).

use std::path::PathBuf;

const LIBS: [&str; 3] = ["mkl_intel_lp64", "mkl_sequential", "mkl_core"];

fn main() {
    println!("cargo:rerun-if-env-changed=FERROCHAT_MKL_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_MKL").is_none() {
        return;
    }
    let Some(dir) = std::env::var_os("FERROCHAT_MKL_DIR").map(PathBuf::from) else {
        panic!(
            "the `mkl` feature links Intel MKL statically: set FERROCHAT_MKL_DIR to a folder \
             holding {} (./scripts/mkl.sh downloads them from PyPI's mkl-static and prints \
             the folder)",
            LIBS.map(|l| format!("lib{l}.a")).join(", ")
        );
    };
    for l in LIBS {
        let file = dir.join(format!("lib{l}.a"));
        if !file.is_file() {
            panic!(
                "FERROCHAT_MKL_DIR={}: {} is missing (./scripts/mkl.sh downloads it)",
                dir.display(),
                file.display()
            );
        }
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    // not bundled into the rlib (the core library alone is 385 MB): the final link
    // reads them from the folder, in this order
    for l in LIBS {
        println!("cargo:rustc-link-lib=static:-bundle={l}");
    }
    for l in ["pthread", "m", "dl"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
}
