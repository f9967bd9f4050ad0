//! The text format as upstream prints it: protobuf's C++ `DebugString` layout, which Caffe's
//! tools write and log ("Initializing net from parameters:"), so what we print reads the same
//! and parses in either program: set fields in field-number order, one per line (a
//! repeated field once per element), nested messages as `name {` ... `}` indented by two
//! spaces, enums by name, strings C-escaped in double quotes, floats in the shortest of `%.6g`
//! / `%.9g` that reads back exactly (protobuf's `SimpleFtoa`; doubles `%.15g` / `%.17g`).

use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

/// `message` as protobuf's C++ `DebugString()` prints it. [`super::parse_text`] reads it back
/// to an equal message.
pub fn print_text<M: ReflectMessage>(message: &M) -> String {
    let mut out = String::new();
    print_message(&message.transcode_to_dynamic(), 0, &mut out);
    out
}

fn print_message(message: &DynamicMessage, indent: usize, out: &mut String) {
    let mut fields: Vec<_> = message.fields().collect();
    fields.sort_by_key(|(field, _)| field.number());
    for (field, value) in fields {
        match value {
            Value::List(items) => {
                for item in items {
                    print_field(field.name(), &field.kind(), item, indent, out);
                }
            }
            other => print_field(field.name(), &field.kind(), other, indent, out),
        }
    }
}

fn print_field(name: &str, kind: &Kind, value: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match value {
        Value::Message(inner) => {
            out.push_str(&format!("{pad}{name} {{\n"));
            print_message(inner, indent + 1, out);
            out.push_str(&format!("{pad}}}\n"));
        }
        scalar => out.push_str(&format!("{pad}{name}: {}\n", scalar_text(kind, scalar))),
    }
}

fn scalar_text(kind: &Kind, value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::I32(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::F32(v) => simple_ftoa(*v),
        Value::F64(v) => simple_dtoa(*v),
        Value::String(s) => format!("\"{}\"", c_escape(s.as_bytes())),
        Value::Bytes(b) => format!("\"{}\"", c_escape(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        Value::Message(_) | Value::List(_) | Value::Map(_) => String::new(),
    }
}

/// C's `%.{precision}g`.
pub fn format_g(value: f64, precision: usize) -> String {
    if value.is_nan() {
        return if value.is_sign_negative() {
            "-nan"
        } else {
            "nan"
        }
        .to_string();
    }
    if value.is_infinite() {
        return if value < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let p = precision.max(1);
    let sci = format!("{value:.*e}", p - 1);
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exponent < -4 || exponent >= p as i32 {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    } else {
        let decimals = (p as i32 - 1 - exponent).max(0) as usize;
        trim(&format!("{value:.decimals$}"))
    }
}

/// protobuf's `SimpleFtoa`: `%.6g`, or `%.9g` when that does not read back as `value`.
pub fn simple_ftoa(value: f32) -> String {
    let short = format_g(f64::from(value), 6);
    if short.parse::<f32>().ok() == Some(value) || !value.is_finite() {
        short
    } else {
        format_g(f64::from(value), 9)
    }
}

/// protobuf's `SimpleDtoa`: `%.15g`, or `%.17g` when that does not read back as `value`.
pub fn simple_dtoa(value: f64) -> String {
    let short = format_g(value, 15);
    if short.parse::<f64>().ok() == Some(value) || !value.is_finite() {
        short
    } else {
        format_g(value, 17)
    }
}

/// protobuf's `CEscape`: `\n \r \t \" \' \\` and octal for other bytes outside printable ASCII.
fn c_escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\'' => s.push_str("\\'"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s
}
