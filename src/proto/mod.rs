//! Caffe's schema as Rust types, and the files made of it.

use prost_reflect::DescriptorPool;
use std::sync::LazyLock;

/// The types generated from proto/caffe.proto.
#[allow(clippy::all, missing_docs)]
pub mod caffe {
    include!(concat!(env!("OUT_DIR"), "/caffe.rs"));
}

/// The descriptors of proto/caffe.proto, for reading and printing the text format.
pub static DESCRIPTOR_POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(
        include_bytes!(concat!(env!("OUT_DIR"), "/caffe_descriptor.bin")).as_ref(),
    )
    .expect("the embedded descriptor set is produced by build.rs and always valid")
});

mod text;
pub use text::{parse_text, print_text};

use std::path::PathBuf;

/// What can go wrong reading or writing Caffe's files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Text {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: not a valid {what}: {message}", path.display())]
    Binary {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Decode { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}
