//! Caffe's formats: every zoo prototxt, the reference binary files, and bad input that may not
//! panic. (The legacy upgrades are tests/upgrade.rs: a binary of their own, as they install a
//! logger.)
//!
//! One test binary for these modules, so CI links a handful of binaries rather than one per
//! file.

mod formats;
mod fuzz_inputs;
