//! No input may panic the text parser or the binary loaders: property tests over random and
//! mutated inputs, plus a kept corpus of awkward cases (tests/corpus/) that every run replays.
//! Failing cases proptest finds are saved under proptest-regressions/ and replayed first.

use proptest::prelude::*;
use rcaffe::proto::caffe::{BlobProto, NetParameter, SolverParameter, SolverState};
use rcaffe::proto::{
    decode_binary, parse_text, read_blob_proto, read_caffemodel, read_solverstate,
};
use std::path::Path;

const ZOO_NET: &str = "../shared/caffe-zoo/examples/cifar10/cifar10_quick_train_test.prototxt";
const ZOO_SOLVER: &str = "../shared/caffe-zoo/examples/mnist/lenet_consolidated_solver.prototxt";
const MODEL: &str = "../shared/reference/upstream/lenet/init.caffemodel";

fn parse_all_ways(text: &str) {
    let origin = Path::new("fuzz.prototxt");
    let _ = parse_text::<NetParameter>(text, origin);
    let _ = parse_text::<SolverParameter>(text, origin);
}

fn decode_all_ways(bytes: &[u8]) {
    let origin = Path::new("fuzz.bin");
    let _ = decode_binary::<NetParameter>(bytes, origin, "caffemodel");
    let _ = decode_binary::<SolverState>(bytes, origin, "solverstate");
    let _ = decode_binary::<BlobProto>(bytes, origin, "binaryproto");
}

/// Applies `edits` (position fraction, kind, byte) to `input`: deletions, insertions, overwrites.
fn mutate(input: &[u8], edits: &[(f64, u8, u8)]) -> Vec<u8> {
    let mut out = input.to_vec();
    for &(at, kind, byte) in edits {
        let position = ((out.len() as f64) * at) as usize;
        match kind % 3 {
            0 if position < out.len() => {
                out.remove(position);
            }
            1 => out.insert(position.min(out.len()), byte),
            _ if position < out.len() => out[position] = byte,
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_text_never_panics(text in "[ -~\\n\\t]{0,300}") {
        parse_all_ways(&text);
    }

    #[test]
    fn mutated_zoo_text_never_panics(edits in prop::collection::vec((0.0f64..1.0, any::<u8>(), 0x20u8..0x7f), 1..12)) {
        for file in [ZOO_NET, ZOO_SOLVER] {
            let original = std::fs::read(file).unwrap();
            let mutated = mutate(&original, &edits);
            parse_all_ways(&String::from_utf8_lossy(&mutated));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all_ways(&bytes);
    }

    #[test]
    fn mutated_caffemodels_never_panic(edits in prop::collection::vec((0.0f64..1.0, any::<u8>(), any::<u8>()), 1..8)) {
        let original = std::fs::read(MODEL).unwrap();
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("m.caffemodel");
        std::fs::write(&path, mutate(&original, &edits)).unwrap();
        let _ = read_caffemodel(&path);
        let _ = read_solverstate(&path);
        let _ = read_blob_proto(&path);
    }
}

#[test]
fn the_kept_corpus_never_panics() {
    let mut seen = 0;
    for kind in ["text", "binary"] {
        let folder = Path::new("tests/corpus").join(kind);
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            parse_all_ways(&String::from_utf8_lossy(&bytes));
            decode_all_ways(&bytes);
            seen += 1;
        }
    }
    assert!(seen >= 10, "the corpus has only {seen} files");
}
