//! Learning-rate schedules: the policies against upstream's golden table, plot-lr, the range test
//! and the demo, and the paper's CIFAR-10 solver files.
//!
//! One test binary for these modules, so CI links a handful of binaries rather than one per
//! file.

mod lr_policy;
mod lr_range;
mod models_clr;
mod plot;
