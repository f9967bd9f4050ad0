//! rcaffe: Caffe's trainer in Rust, with cyclical learning rates.

pub mod inspect;
pub mod log;
pub mod proto;
