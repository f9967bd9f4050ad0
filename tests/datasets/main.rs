//! Data: LMDB and LevelDB reading and writing, the converters against upstream's tools, the
//! transformer, and the Data layer inside upstream's nets. (The Data layer alone is
//! tests/data_layer.rs, a binary of its own: it installs a logger.)
//!
//! One test binary for these modules, so CI links a handful of binaries rather than one per
//! file.

mod data_convert;
mod data_leveldb;
mod data_lmdb;
mod data_transformer;
mod data_upstream_nets;
