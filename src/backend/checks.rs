//! The argument checks both backends make, written once.

use super::{BackendError, Result, Transpose};

/// Shorthand for an [`BackendError::InvalidArgument`].
pub fn invalid(op: &'static str, message: impl Into<String>) -> BackendError {
    BackendError::InvalidArgument {
        op,
        message: message.into(),
    }
}

/// The elements a `rows × cols` row-major matrix with leading dimension `ld` spans (its last
/// element's offset plus one; 0 when it is empty), with `ld` checked to hold a row and the span
/// to fit a `usize`. `name` names the matrix in the error.
pub(crate) fn matrix_span(
    op: &'static str,
    name: &str,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<usize> {
    if ld < cols.max(1) {
        return Err(invalid(
            op,
            format!("leading dimension of {name} is {ld}, less than its {cols} columns"),
        ));
    }
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|span| span.checked_add(cols))
        .ok_or_else(|| {
            invalid(
                op,
                format!("matrix {name} ({rows} x {cols}, ld {ld}) overflows usize"),
            )
        })
}

/// The spans of a GEMM's A, B and C (`C = op(A) op(B)`, `m × n` from `k`), checked as
/// [`matrix_span`] checks each: the one argument check both backends' `gemm` make.
pub(crate) fn gemm_spans(
    op: &'static str,
    (trans_a, trans_b): (Transpose, Transpose),
    (m, n, k): (usize, usize, usize),
    (lda, ldb, ldc): (usize, usize, usize),
) -> Result<[usize; 3]> {
    // Stored extents (rows x cols) of A and B as the row-major operands are laid out.
    let (a_rows, a_cols) = match trans_a {
        Transpose::NoTrans => (m, k),
        Transpose::Trans => (k, m),
    };
    let (b_rows, b_cols) = match trans_b {
        Transpose::NoTrans => (k, n),
        Transpose::Trans => (n, k),
    };
    Ok([
        matrix_span(op, "A", a_rows, a_cols, lda)?,
        matrix_span(op, "B", b_rows, b_cols, ldb)?,
        matrix_span(op, "C", m, n, ldc)?,
    ])
}

/// The spans of `copy_2d`'s source and destination (`rows` rows of `cols` values, rows
/// `x_stride` and `y_stride` apart), or `None` when there is nothing to copy: destination rows
/// may not overlap (`y_stride >= cols`), and neither region may overflow a `usize`.
pub(crate) fn copy_2d_spans(
    op: &'static str,
    (rows, cols): (usize, usize),
    x_stride: usize,
    y_stride: usize,
) -> Result<Option<(usize, usize)>> {
    if rows == 0 || cols == 0 {
        return Ok(None);
    }
    if rows > 1 && y_stride < cols {
        return Err(invalid(
            op,
            format!("y_stride {y_stride} is less than the {cols} columns copied per row"),
        ));
    }
    let span = |stride: usize| {
        (rows - 1)
            .checked_mul(stride)
            .and_then(|s| s.checked_add(cols))
            .ok_or_else(|| invalid(op, "the copied region overflows usize"))
    };
    Ok(Some((span(x_stride)?, span(y_stride)?)))
}

/// Checks that every label that is not `ignore_label` names a class in `0..dim`, before a
/// label-indexed op writes anything: the one label check of both backends (the CUDA backend
/// runs it on the labels it downloads). A label's class is upstream's `static_cast<int>`.
pub(crate) fn check_labels(
    op: &'static str,
    labels: &[f32],
    ignore_label: Option<i32>,
    dim: usize,
) -> Result<()> {
    for (position, &label) in labels.iter().enumerate() {
        let class = label as i32;
        if ignore_label == Some(class) {
            continue;
        }
        if usize::try_from(class).map_or(true, |class| class >= dim) {
            return Err(invalid(
                op,
                format!("label {label} at position {position} is outside 0..{dim}"),
            ));
        }
    }
    Ok(())
}

/// A Bernoulli fill's `p`, checked to lie in `[0, 1]`.
pub(crate) fn check_probability(op: &'static str, p: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(invalid(op, format!("needs 0 <= p <= 1, got {p}")));
    }
    Ok(())
}

/// Checks that `off..off + len` lies inside a buffer of `buf_len` elements and returns the range.
pub fn check_range(
    op: &'static str,
    arg: &'static str,
    buf_len: usize,
    off: usize,
    len: usize,
) -> Result<std::ops::Range<usize>> {
    match off.checked_add(len) {
        Some(end) if end <= buf_len => Ok(off..end),
        _ => Err(BackendError::OutOfBounds {
            op,
            arg,
            off,
            end: off.saturating_add(len),
            len: buf_len,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    fn message(result: Result<impl fmt::Debug>) -> String {
        result.expect_err("an invalid argument").to_string()
    }

    #[test]
    fn gemm_spans_follow_the_stored_layout_and_name_a_bad_leading_dimension() {
        let no = Transpose::NoTrans;
        // A 2x3 (ld 4), B 3x5 (ld 5), C 2x5 (ld 6).
        assert_eq!(
            gemm_spans("gemm", (no, no), (2, 5, 3), (4, 5, 6)).unwrap(),
            [4 + 3, 2 * 5 + 5, 6 + 5]
        );
        // Transposed A is stored 3x2: its leading dimension holds 2 columns.
        assert_eq!(
            gemm_spans("gemm", (Transpose::Trans, no), (2, 5, 3), (2, 5, 5)).unwrap()[0],
            2 * 2 + 2
        );
        let short = message(gemm_spans("gemm", (no, no), (2, 5, 3), (4, 4, 5)));
        assert!(
            short.contains("leading dimension of B is 4, less than its 5 columns"),
            "{short}"
        );
        let huge = message(gemm_spans("gemm", (no, no), (usize::MAX, 1, 1), (2, 1, 1)));
        assert!(huge.contains("overflows usize"), "{huge}");
        // Empty products span nothing, but their leading dimensions are still checked.
        assert_eq!(
            gemm_spans("gemm", (no, no), (0, 5, 3), (3, 5, 5)).unwrap(),
            [0, 15, 0]
        );
    }

    #[test]
    fn labels_are_classes_in_range_unless_ignored() {
        // Truncated toward zero, as upstream's static_cast<int>: 2.9 is class 2, -0.5 class 0.
        check_labels("op", &[0.0, 2.9, -0.5], None, 3).unwrap();
        check_labels("op", &[1.0, 7.0], Some(7), 3).unwrap();
        let high = message(check_labels("op", &[1.0, 3.0], None, 3));
        assert!(
            high.contains("label 3 at position 1 is outside 0..3"),
            "{high}"
        );
        let negative = message(check_labels("op", &[-1.0], Some(7), 3));
        assert!(negative.contains("label -1 at position 0"), "{negative}");
    }

    #[test]
    fn copy_2d_spans_refuse_overlapping_rows_and_overflow() {
        assert_eq!(
            copy_2d_spans("copy_2d", (3, 4), 10, 4).unwrap(),
            Some((24, 12))
        );
        assert_eq!(copy_2d_spans("copy_2d", (0, 4), 10, 4).unwrap(), None);
        // One row may have any destination stride; overlapping source rows are fine.
        assert_eq!(
            copy_2d_spans("copy_2d", (1, 4), 0, 0).unwrap(),
            Some((4, 4))
        );
        assert_eq!(
            copy_2d_spans("copy_2d", (2, 4), 1, 4).unwrap(),
            Some((5, 8))
        );
        let overlap = message(copy_2d_spans("copy_2d", (2, 4), 4, 3));
        assert!(
            overlap.contains("y_stride 3 is less than the 4 columns"),
            "{overlap}"
        );
        let huge = message(copy_2d_spans("copy_2d", (usize::MAX, 2), 2, 2));
        assert!(huge.contains("overflows usize"), "{huge}");
    }
}
