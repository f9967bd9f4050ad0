//! The protobuf text format (`.prototxt`), read and printed through the embedded descriptors.

use super::ProtoError;
use miette::Diagnostic;
use prost_reflect::{DynamicMessage, ReflectMessage};
use std::path::Path;

/// Parses `text` (the contents of `origin`) as a `M` in protobuf text format.
///
/// Errors name `origin`, the line and column, and what was wrong there; an unknown field or
/// enum value also lists the closest valid names.
pub fn parse_text<M: ReflectMessage + Default>(text: &str, origin: &Path) -> Result<M, ProtoError> {
    let descriptor = M::default().descriptor();
    let dynamic = DynamicMessage::parse_text_format(descriptor, text).map_err(|error| {
        let offset = error
            .labels()
            .and_then(|mut labels| labels.next())
            .map_or(text.len(), |label| label.offset());
        let (line, column) = line_and_column(text, offset);
        ProtoError::Text {
            path: origin.to_path_buf(),
            line,
            column,
            message: explain(&error.to_string(), text, offset),
        }
    })?;
    dynamic
        .transcode_to::<M>()
        .map_err(|error| ProtoError::Decode {
            path: origin.to_path_buf(),
            message: error.to_string(),
        })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The 1-based line where top-level field `field` is written for the `occurrence`-th time
/// (0-based; each element of a list `field: [a, b]` counts once) in prototxt `text`; fields
/// inside nested messages, comments and strings do not count. `None` when it is not written
/// there. For errors about a value that parsed but cannot be used, which the parsed message no
/// longer places.
pub fn field_line(text: &str, field: &str, occurrence: usize) -> Option<usize> {
    find_field(text, field, occurrence).map(|(line, _)| line)
}

/// [`field_line`] inside nested messages: `blocks` names each enclosing message field and its
/// occurrence, outermost first (`[("layer", 2)]`: the third `layer { }` of a net). The line is
/// counted from the start of `text`.
pub fn nested_field_line(
    text: &str,
    blocks: &[(&str, usize)],
    field: &str,
    occurrence: usize,
) -> Option<usize> {
    let (mut first_line, mut inside) = (1, text);
    for &(block, index) in blocks {
        let (line, body) = message_body(inside, block, index)?;
        first_line += line - 1;
        inside = body;
    }
    Some(first_line - 1 + field_line(inside, field, occurrence)?)
}

/// The line and the byte offset just past the name where top-level field `field` is written
/// for the `occurrence`-th time (see [`field_line`]).
fn find_field(text: &str, field: &str, occurrence: usize) -> Option<(usize, usize)> {
    let mut chars = text.char_indices().peekable();
    let (mut line, mut depth, mut seen) = (1, 0usize, 0);
    while let Some((start, c)) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' => skip_comment(&mut chars),
            '"' | '\'' => skip_string(&mut chars, c, &mut line),
            '{' | '<' => depth += 1,
            '}' | '>' => depth = depth.saturating_sub(1),
            _ if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = start + c.len_utf8();
                while let Some((i, next)) =
                    chars.next_if(|&(_, next)| next.is_ascii_alphanumeric() || next == '_')
                {
                    end = i + next.len_utf8();
                }
                let rest = text[end..].trim_start_matches([' ', '\t']);
                let names_a_field = rest.starts_with([':', '{', '<']);
                if depth > 0 || !names_a_field || &text[start..end] != field {
                    continue;
                }
                let is_list = rest
                    .strip_prefix(':')
                    .is_some_and(|value| value.trim_start().starts_with('['));
                if !is_list {
                    if seen == occurrence {
                        return Some((line, end));
                    }
                    seen += 1;
                    continue;
                }
                // Up to the '[', then one occurrence per element, on the line it starts.
                for (_, c) in chars.by_ref() {
                    match c {
                        '\n' => line += 1,
                        '[' => break,
                        _ => {}
                    }
                }
                let mut element_starts = true;
                while let Some((i, c)) = chars.next() {
                    match c {
                        ']' => break,
                        ',' => element_starts = true,
                        '\n' => line += 1,
                        _ if c.is_whitespace() => {}
                        _ => {
                            if element_starts {
                                if seen == occurrence {
                                    return Some((line, i));
                                }
                                seen += 1;
                                element_starts = false;
                            }
                            if c == '"' || c == '\'' {
                                skip_string(&mut chars, c, &mut line);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// The text between the braces of the `occurrence`-th top-level message field `field`
/// (`field { ... }`, `field: < ... >`), and the line its opening brace is on.
fn message_body<'t>(text: &'t str, field: &str, occurrence: usize) -> Option<(usize, &'t str)> {
    let (line, after_name) = find_field(text, field, occurrence)?;
    let rest = &text[after_name..];
    let open = rest.find(['{', '<'])?;
    if !rest[..open]
        .trim_start()
        .trim_start_matches(':')
        .trim()
        .is_empty()
    {
        return None;
    }
    let brace_line = line + rest[..open].matches('\n').count();
    let body_start = after_name + open + 1;
    let mut chars = text[body_start..].char_indices().peekable();
    let (mut depth, mut lines_in_strings) = (1usize, 0);
    while let Some((i, c)) = chars.next() {
        match c {
            '#' => skip_comment(&mut chars),
            '"' | '\'' => skip_string(&mut chars, c, &mut lines_in_strings),
            '{' | '<' => depth += 1,
            '}' | '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some((brace_line, &text[body_start..body_start + i]));
                }
            }
            _ => {}
        }
    }
    None
}

/// Consumes a comment's rest, up to (not including) the end of its line.
fn skip_comment(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) {
    while chars.next_if(|&(_, c)| c != '\n').is_some() {}
}

/// Consumes a string literal's rest up to its closing `quote`, counting the lines it spans.
fn skip_string(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    quote: char,
    line: &mut usize,
) {
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\n' => *line += 1,
            _ if c == quote => return,
            _ => {}
        }
    }
}

/// Adds what a user needs to fix the error: the valid choices for a misspelt name.
fn explain(message: &str, text: &str, offset: usize) -> String {
    let pool = &*super::DESCRIPTOR_POOL;
    let quoted: Vec<&str> = message.split('\'').skip(1).step_by(2).collect();
    let found_token = || {
        let rest = &text[offset.min(text.len())..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if word.is_empty() {
            rest.chars().next().map(String::from).unwrap_or_default()
        } else {
            word
        }
    };
    if message.starts_with("field '") && message.contains("not found for message") {
        if let (Some(field), Some(message_name)) = (quoted.first(), quoted.get(1)) {
            if let Some(descriptor) = pool.get_message_by_name(message_name) {
                let names: Vec<String> =
                    descriptor.fields().map(|f| f.name().to_string()).collect();
                return format!(
                    "unknown field '{field}' in {message_name}{}",
                    suggestion(field, &names)
                );
            }
        }
    }
    if message.starts_with("value '") && message.contains("not found for enum") {
        if let (Some(value), Some(enum_name)) = (quoted.first(), quoted.get(1)) {
            if let Some(descriptor) = pool.get_enum_by_name(enum_name) {
                let names: Vec<String> =
                    descriptor.values().map(|v| v.name().to_string()).collect();
                return format!(
                    "invalid value '{value}' for enum {enum_name}; valid values: {}",
                    names.join(", ")
                );
            }
        }
    }
    if message.starts_with("invalid token") {
        return format!("invalid token '{}'", found_token());
    }
    message.to_string()
}

/// "; did you mean 'x'?" for the closest of `candidates`, when one is close enough (for a
/// misspelt name: a field, a layer type).
pub fn suggestion<S: AsRef<str>>(name: &str, candidates: &[S]) -> String {
    let best = candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate.as_ref()), candidate.as_ref()))
        .min();
    match best {
        Some((distance, candidate)) if distance <= name.len().max(3) / 3 + 1 => {
            format!("; did you mean '{candidate}'?")
        }
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn field_line_finds_top_level_fields_only() {
        let text = "# lr_policy: \"step\" in a comment\nnet_param {\n  name: \"lr_policy\"\n  \
                    layer { lr_policy: 1 }\n}\nbase_lr: 0.1 # stepvalue: 3\n\
                    lr_policy : \"multistep\"\nstepvalue: 10\nstepvalue: 5\ntype: 'it''s'\n";
        assert_eq!(field_line(text, "lr_policy", 0), Some(7));
        assert_eq!(field_line(text, "base_lr", 0), Some(6));
        assert_eq!(field_line(text, "stepvalue", 0), Some(8));
        assert_eq!(field_line(text, "stepvalue", 1), Some(9));
        assert_eq!(field_line(text, "stepvalue", 2), None);
        assert_eq!(field_line(text, "type", 0), Some(10));
        assert_eq!(field_line(text, "name", 0), None);
        assert_eq!(field_line(text, "max_lr", 0), None);
        // Lists: each element counts, on the line it starts, then the field written again.
        let text = "stepvalue: [100,\n  50]\nstepvalue: 300\nstepvalue : [ 'a,b', 7 ]\n";
        assert_eq!(field_line(text, "stepvalue", 0), Some(1));
        assert_eq!(field_line(text, "stepvalue", 1), Some(2));
        assert_eq!(field_line(text, "stepvalue", 2), Some(3));
        assert_eq!(field_line(text, "stepvalue", 3), Some(4));
        assert_eq!(field_line(text, "stepvalue", 4), Some(4));
        assert_eq!(field_line(text, "stepvalue", 5), None);
        // A message field written with braces, and an escaped quote inside a string.
        let text = "train_state { level: 1 }\nsnapshot_prefix: \"a\\\"b\"\nlevel: 2\n";
        assert_eq!(field_line(text, "train_state", 0), Some(1));
        assert_eq!(field_line(text, "level", 0), Some(3));
    }

    #[test]
    fn nested_field_line_finds_fields_inside_the_named_blocks() {
        let text = "net_param {\n  layer { name: 'a' type: 'Input' }\n  # layer { type: 'x' }\n  \
                    layer {\n    name: '}'\n    type:\n      'Poolling'\n  }\n}\n\
                    test_net_param: <\n  layer <\n    type: 'ReLU' > >\n";
        let at = |blocks: &[(&str, usize)], field| nested_field_line(text, blocks, field, 0);
        assert_eq!(at(&[("net_param", 0), ("layer", 0)], "type"), Some(2));
        assert_eq!(at(&[("net_param", 0), ("layer", 1)], "type"), Some(6));
        assert_eq!(at(&[("net_param", 0), ("layer", 1)], "name"), Some(5));
        assert_eq!(at(&[("test_net_param", 0), ("layer", 0)], "type"), Some(12));
        assert_eq!(at(&[("net_param", 0), ("layer", 2)], "type"), None);
        assert_eq!(at(&[("net_param", 1)], "layer"), None);
        assert_eq!(at(&[], "net_param"), Some(1));
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kernel_size", "kernel_size"), 0);
        assert_eq!(edit_distance("kernal_size", "kernel_size"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
