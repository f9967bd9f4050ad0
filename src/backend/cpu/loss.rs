//! Label-indexed ops and the sigmoid cross-entropy, for the loss and accuracy layers.
//!
//! Labels arrive as f32 values, as Caffe stores them, and are read as upstream reads them with
//! `static_cast<int>`: truncated toward zero. Positions are `(o, j)` pairs of an
//! `(outer, dim, inner)` view, numbered `p = o * inner + j`, the order of the label blob.
//! The trait impl in `cpu/mod.rs` checks the views and calls these loops.

use super::elementwise::{self, Operand};
use super::SERIAL;
use crate::backend::{check_labels, Axis, Result};

/// Labels on the host: their values and the label to skip.
pub(super) struct HostLabels<'a> {
    pub values: &'a [f32],
    pub ignore_label: Option<i32>,
}

/// The class a stored label names (upstream's `static_cast<int>`: truncation toward zero).
fn class_of(label: f32) -> i32 {
    label as i32
}

fn ignored(class: i32, ignore_label: Option<i32>) -> bool {
    ignore_label == Some(class)
}

/// `y[i] = 0` where the label `labels[i]` is `ignore_label`, else 1; serial, as the labels are
/// few.
pub(super) fn label_mask(labels: Operand<'_>, ignore_label: Option<i32>, y: &mut [f32]) {
    elementwise::map1(SERIAL, labels, y, move |l| {
        if ignored(class_of(l), ignore_label) {
            0.0
        } else {
            1.0
        }
    });
}

/// `y[p] = x[o, label[p], j]`, or `fill` at ignored positions.
pub(super) fn gather_at_label(
    op: &'static str,
    Axis { dim, inner, .. }: Axis,
    x: &[f32],
    HostLabels {
        values: labels,
        ignore_label,
    }: HostLabels<'_>,
    fill: f32,
    y: &mut [f32],
) -> Result<()> {
    check_labels(op, labels, ignore_label, dim)?;
    for (p, (y, &l)) in y.iter_mut().zip(labels).enumerate() {
        let class = class_of(l);
        *y = if ignored(class, ignore_label) {
            fill
        } else {
            let (o, j) = (p / inner, p % inner);
            x[(o * dim + class as usize) * inner + j]
        };
    }
    Ok(())
}

/// `y[o, label[p], j] = alpha y[..] + beta`; ignored positions zeroed along the whole axis.
pub(super) fn affine_at_label(
    op: &'static str,
    Axis { dim, inner, .. }: Axis,
    HostLabels {
        values: labels,
        ignore_label,
    }: HostLabels<'_>,
    (alpha, beta): (f32, f32),
    y: &mut [f32],
) -> Result<()> {
    check_labels(op, labels, ignore_label, dim)?;
    for (p, &l) in labels.iter().enumerate() {
        let class = class_of(l);
        let (o, j) = (p / inner, p % inner);
        let base = o * dim * inner + j;
        if ignored(class, ignore_label) {
            for c in 0..dim {
                y[base + c * inner] = 0.0;
            }
        } else {
            let v = &mut y[base + class as usize * inner];
            *v = alpha * *v + beta;
        }
    }
    Ok(())
}

/// `y[p] = 1` when at most `top_k` classes (the label's own included) score `>=` the label's
/// score, else 0; 0 at ignored positions.
pub(super) fn top_k_hits(
    op: &'static str,
    (Axis { dim, inner, .. }, top_k): (Axis, usize),
    x: &[f32],
    HostLabels {
        values: labels,
        ignore_label,
    }: HostLabels<'_>,
    y: &mut [f32],
) -> Result<()> {
    check_labels(op, labels, ignore_label, dim)?;
    for (p, (y, &l)) in y.iter_mut().zip(labels).enumerate() {
        let class = class_of(l);
        if ignored(class, ignore_label) {
            *y = 0.0;
            continue;
        }
        let (o, j) = (p / inner, p % inner);
        let score = |c: usize| x[(o * dim + c) * inner + j];
        let truth = score(class as usize);
        // Ties count against the label, as upstream's `>=` (src/caffe/layers/accuracy_layer.cpp).
        let mut at_least = 0;
        for c in 0..dim {
            if score(c) >= truth {
                at_least += 1;
                if at_least > top_k {
                    break;
                }
            }
        }
        *y = if at_least <= top_k { 1.0 } else { 0.0 };
    }
    Ok(())
}

/// `y[c] = sum of x[i] over the i labelled c`, ignored labels skipped.
pub(super) fn sum_by_label(
    op: &'static str,
    x: &[f32],
    HostLabels {
        values: labels,
        ignore_label,
    }: HostLabels<'_>,
    y: &mut [f32],
) -> Result<()> {
    let classes = y.len();
    check_labels(op, labels, ignore_label, classes)?;
    let mut sums = vec![0f64; classes];
    for (&v, &l) in x.iter().zip(labels) {
        let class = class_of(l);
        if !ignored(class, ignore_label) {
            sums[class as usize] += f64::from(v);
        }
    }
    for (y, s) in y.iter_mut().zip(sums) {
        *y = s as f32;
    }
    Ok(())
}

/// `ln(1 + exp(x - 2 x [x >= 0])) - x (t - [x >= 0])`, evaluated in f32 term by term as
/// upstream (src/caffe/layers/sigmoid_cross_entropy_loss_layer.cpp).
#[inline(always)]
pub(super) fn sigmoid_cross_entropy(x: f32, t: f32) -> f32 {
    let positive = if x >= 0.0 { 1.0 } else { 0.0 };
    let log_term = (1.0 + (x - 2.0 * x * positive).exp()).ln();
    log_term - x * (t - positive)
}
