//! Which of Caffe's files a file is, told from its contents, so that a file given where another
//! kind belongs (a `.solverstate` as `-weights`, a `.caffemodel` as a prototxt) is refused with
//! what it is and where it goes, rather than with a protobuf decoding error.

use super::{ProtoError, DESCRIPTOR_POOL};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use std::path::Path;

/// The kinds of file Caffe reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A net in text format: a `NetParameter` (`-model`, a solver's `net`).
    NetPrototxt,
    /// A solver in text format: a `SolverParameter` (`-solver`).
    SolverPrototxt,
    /// A net with its weights, binary: a `NetParameter` (`.caffemodel`, `-weights`).
    Weights,
    /// A solver's state, binary: a `SolverState` (`.solverstate`, `-snapshot`).
    SolverState,
    /// One blob, binary: a `BlobProto` (`.binaryproto`, a mean file).
    Blob,
}

impl FileKind {
    /// What a file of this kind is called: "the {noun}", "a {noun}".
    pub const fn noun(self) -> &'static str {
        match self {
            FileKind::NetPrototxt => "net prototxt",
            FileKind::SolverPrototxt => "solver prototxt",
            FileKind::Weights => "model's weights (.caffemodel)",
            FileKind::SolverState => "solver state (.solverstate)",
            FileKind::Blob => "blob (.binaryproto)",
        }
    }

    /// Where a file of this kind is given.
    pub fn usage(self) -> &'static str {
        match self {
            FileKind::NetPrototxt => "give it to -model, or name it in a solver's net field",
            FileKind::SolverPrototxt => "train from it with -solver",
            FileKind::Weights => "start from it with -weights",
            FileKind::SolverState => "resume from it with -snapshot",
            FileKind::Blob => "use it as a transform_param's mean_file",
        }
    }

    fn is_text(self) -> bool {
        matches!(self, FileKind::NetPrototxt | FileKind::SolverPrototxt)
    }

    fn message(self) -> MessageDescriptor {
        let name = match self {
            FileKind::NetPrototxt | FileKind::Weights => "caffe.NetParameter",
            FileKind::SolverPrototxt => "caffe.SolverParameter",
            FileKind::SolverState => "caffe.SolverState",
            FileKind::Blob => "caffe.BlobProto",
        };
        DESCRIPTOR_POOL
            .get_message_by_name(name)
            .expect("caffe.proto defines the messages of Caffe's files")
    }

    /// The kind of file `bytes` are, when they are one of Caffe's: text that parses as a net
    /// and not as a solver (or the other way round), or binary whose top-level fields are all
    /// fields of one message, each written with its field's wire type.
    pub fn of_contents(bytes: &[u8]) -> Option<FileKind> {
        match as_text(bytes) {
            Some(text) => text_kind(text),
            None => binary_kind(bytes),
        }
    }
}

/// `bytes` as text, when they are UTF-8 without control characters other than whitespace.
fn as_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let binary = text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'));
    (!binary).then_some(text)
}

fn text_kind(text: &str) -> Option<FileKind> {
    let parses = |kind: FileKind| DynamicMessage::parse_text_format(kind.message(), text).is_ok();
    match (
        parses(FileKind::NetPrototxt),
        parses(FileKind::SolverPrototxt),
    ) {
        (true, false) => Some(FileKind::NetPrototxt),
        (false, true) => Some(FileKind::SolverPrototxt),
        // Both (nothing but comments, say) or neither: not telling.
        _ => None,
    }
}

fn binary_kind(bytes: &[u8]) -> Option<FileKind> {
    [FileKind::Weights, FileKind::SolverState, FileKind::Blob]
        .into_iter()
        .find(|kind| fits_message(bytes, &kind.message()))
}

/// Whether `bytes` encode a `message` as far as its top level shows: each field number is one
/// of its fields, written with that field's wire type, and the last value ends with the bytes.
fn fits_message(bytes: &[u8], message: &MessageDescriptor) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(key) = read_varint(&mut rest) else {
            return false;
        };
        let field = u32::try_from(key >> 3)
            .ok()
            .and_then(|number| message.get_field(number));
        let wire_type = key & 7;
        let value_skipped = match wire_type {
            0 => read_varint(&mut rest).is_some(),
            1 => skip(&mut rest, 8),
            2 => read_varint(&mut rest)
                .and_then(|len| usize::try_from(len).ok())
                .is_some_and(|len| skip(&mut rest, len)),
            5 => skip(&mut rest, 4),
            _ => false,
        };
        if !value_skipped || !field.is_some_and(|field| written_as(&field, wire_type)) {
            return false;
        }
    }
    !bytes.is_empty()
}

/// Whether `field` is written with `wire_type`: its own, or length-delimited for a packed list.
fn written_as(field: &FieldDescriptor, wire_type: u64) -> bool {
    let own = match field.kind() {
        Kind::String | Kind::Bytes | Kind::Message(_) => return wire_type == 2,
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Bool
        | Kind::Enum(_) => 0,
    };
    wire_type == own || (wire_type == 2 && field.is_list())
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *bytes = &bytes[index + 1..];
            return Some(value);
        }
    }
    None
}

fn skip(bytes: &mut &[u8], len: usize) -> bool {
    match bytes.get(len..) {
        Some(rest) => {
            *bytes = rest;
            true
        }
        None => false,
    }
}

/// Refuses `bytes`, read from `path` where a file of kind `expected` belongs, when they are
/// recognisably something else: binary where text belongs, or a binary file of another kind.
/// Text where text belongs is left to the parser (see [`refuse_other_prototxt`]); bytes that
/// are no kind at all are left to the decoder, whose error says what is wrong with them.
pub(super) fn refuse_other_kind(
    bytes: &[u8],
    path: &Path,
    expected: FileKind,
) -> Result<(), ProtoError> {
    let found = if expected.is_text() {
        if as_text(bytes).is_some() {
            return Ok(());
        }
        let found = binary_kind(bytes);
        if found.is_none() && std::str::from_utf8(bytes).is_ok() {
            // Text with a stray control character: the parser names its line.
            return Ok(());
        }
        found
    } else {
        if fits_message(bytes, &expected.message()) {
            return Ok(());
        }
        match FileKind::of_contents(bytes) {
            Some(found) if found != expected => Some(found),
            _ => return Ok(()),
        }
    };
    Err(ProtoError::WrongKind {
        path: path.to_path_buf(),
        found,
        expected,
    })
}

/// `error`, the parse error of `text` (read from `path`, where a prototxt of kind `expected`
/// belongs), or instead a refusal when the text is a prototxt of the other kind.
pub(super) fn refuse_other_prototxt(
    error: ProtoError,
    text: &str,
    path: &Path,
    expected: FileKind,
) -> ProtoError {
    match text_kind(text) {
        Some(found) if found != expected => ProtoError::WrongKind {
            path: path.to_path_buf(),
            found: Some(found),
            expected,
        },
        _ => error,
    }
}

/// The message of [`ProtoError::WrongKind`].
pub(super) fn wrong_kind_message(
    path: &Path,
    found: Option<FileKind>,
    expected: FileKind,
) -> String {
    match found {
        Some(found) => format!(
            "{} is a {}, not a {}: {}",
            path.display(),
            found.noun(),
            expected.noun(),
            found.usage()
        ),
        None => format!(
            "{} is not text, so not a {}",
            path.display(),
            expected.noun()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::caffe::{BlobProto, BlobShape, NetParameter, SolverState};
    use prost::Message;

    #[test]
    fn binary_kinds_are_told_by_their_fields() {
        let net = NetParameter {
            name: Some("n".into()),
            layer: vec![Default::default()],
            ..Default::default()
        };
        let state = SolverState {
            iter: Some(7),
            learned_net: Some("n_iter_7.caffemodel".into()),
            history: vec![BlobProto::default()],
            current_step: Some(0),
        };
        let blob = BlobProto {
            shape: Some(BlobShape { dim: vec![1, 3] }),
            data: vec![0.5; 3],
            ..Default::default()
        };
        let legacy_blob = BlobProto {
            num: Some(1),
            channels: Some(3),
            height: Some(1),
            width: Some(1),
            data: vec![0.5; 3],
            ..Default::default()
        };
        let kind = |bytes: Vec<u8>| FileKind::of_contents(&bytes);
        assert_eq!(kind(net.encode_to_vec()), Some(FileKind::Weights));
        assert_eq!(kind(state.encode_to_vec()), Some(FileKind::SolverState));
        assert_eq!(kind(blob.encode_to_vec()), Some(FileKind::Blob));
        assert_eq!(kind(legacy_blob.encode_to_vec()), Some(FileKind::Blob));
        // Cut inside a value: no kind.
        let bytes = net.encode_to_vec();
        assert_eq!(kind(bytes[..bytes.len() - 1].to_vec()), None);
    }

    #[test]
    fn text_kinds_are_told_by_what_parses() {
        let kind = |text: &str| FileKind::of_contents(text.as_bytes());
        assert_eq!(
            kind("name: 'n' layer { name: 'x' }"),
            Some(FileKind::NetPrototxt)
        );
        assert_eq!(
            kind("base_lr: 0.1 net: 'n.prototxt'"),
            Some(FileKind::SolverPrototxt)
        );
        assert_eq!(kind("# only a comment\n"), None);
        assert_eq!(kind("base_lr: 0.1 layer { }"), None);
    }
}
