//! rcaffe: Caffe's trainer in Rust, with cyclical learning rates.

pub mod inspect;
pub mod log;
pub mod lr_policy;
pub mod plot;
pub mod proto;
