//! Compiles every `kernels/*.cu` of the rcaffe crate as C++ for the host, with
//! `kernels/emulation.h` force-included, plus the emulation runtime (the index variables).
//! This crate is a dev-dependency only: a normal `cargo build` of rcaffe never builds it.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let kernels = manifest.join("../../kernels");
    let header = kernels.join("emulation.h");
    let constants = kernels.join("constants.h");
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed={}", constants.display());
    println!("cargo:rerun-if-changed=src/runtime.cpp");

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .expect("reading kernels/")
        .map(|e| e.expect("reading kernels/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .flag("-include")
        .flag(header.to_str().expect("UTF-8 path"))
        // The constants the kernels share with the CPU backend, as NVRTC sees them.
        .flag("-include")
        .flag(constants.to_str().expect("UTF-8 path"))
        // IEEE semantics as on the device with default NVRTC flags (no fast math), and no
        // contraction of a * b + c into an FMA, which would change rounding against the CPU op.
        .flag("-ffp-contract=off")
        .file("src/runtime.cpp");
    // `.cu` is not a C++ extension to g++: say so for the kernel files only.
    build.flag("-x").flag("c++");
    for s in &sources {
        build.file(s);
    }
    build.compile("rcaffe_kernel_emu");
}
