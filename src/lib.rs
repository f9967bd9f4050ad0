//! rcaffe: Caffe's trainer in Rust, with cyclical learning rates.

pub mod log;
pub mod proto;
