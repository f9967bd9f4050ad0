//! Compiles proto/caffe.proto with protox (pure Rust, so no `protoc` is needed), generates the
//! prost types with prost-reflect's `ReflectMessage` derive, and embeds the descriptor set the
//! text-format reader and printer work from.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/caffe.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(["caffe.proto"], ["proto"])?;
    std::fs::write(
        out_dir.join("caffe_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    let mut config = prost_build::Config::new();
    for file in &descriptors.file {
        let package = file.package();
        let mut pending: Vec<(String, &prost_types::DescriptorProto)> = file
            .message_type
            .iter()
            .map(|m| (format!("{package}.{}", m.name()), m))
            .collect();
        while let Some((full_name, message)) = pending.pop() {
            config.message_attribute(
                format!(".{full_name}"),
                format!(
                    "#[derive(::prost_reflect::ReflectMessage)]\n\
                     #[prost_reflect(message_name = \"{full_name}\")]\n\
                     #[prost_reflect(descriptor_pool = \"crate::proto::DESCRIPTOR_POOL\")]"
                ),
            );
            pending.extend(
                message
                    .nested_type
                    .iter()
                    .map(|nested| (format!("{full_name}.{}", nested.name()), nested)),
            );
        }
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
