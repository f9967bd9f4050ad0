//! rcaffe: Caffe's trainer in Rust, with cyclical learning rates.

pub mod backend;
pub mod benchmark;
pub mod blob;
pub mod caffe_log;
pub mod data;
pub mod demo;
pub mod filler;
pub mod gflags;
pub mod inspect;
pub mod layers;
pub mod log;
pub mod lr_policy;
pub mod lr_range;
pub mod net;
pub mod plot;
pub mod progress;
pub mod proto;
pub mod solver;
pub mod testing;
