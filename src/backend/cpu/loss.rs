//! Label-indexed ops and the sigmoid cross-entropy, for the loss and accuracy layers.
//!
//! Labels arrive as f32 values, as Caffe stores them, and are read as upstream reads them with
//! `static_cast<int>`: truncated toward zero. Positions are `(o, j)` pairs of an
//! `(outer, dim, inner)` view, numbered `p = o * inner + j`, the order of the label blob.
//! The trait impl in `cpu/mod.rs` forwards to the `*_cpu` methods here.

use super::elementwise::{self, Operand};
use super::{rd, wr, CpuBackend, CpuBuffer, Par};
use crate::backend::{check_labels, Result};

impl CpuBackend {
    pub(super) fn label_mask_cpu(
        &self,
        n: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "label_mask";
        let label = rd(OP, "label", label, label_off, n)?;
        label_mask(label, ignore_label, wr(OP, "y", y, y_off, n)?);
        Ok(())
    }

    pub(super) fn gather_at_label_cpu(
        &self,
        (outer, dim, inner): (usize, usize, usize),
        x: &CpuBuffer,
        x_off: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        fill: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "gather_at_label";
        let x = rd(OP, "x", x, x_off, outer * dim * inner)?;
        let label = rd(OP, "label", label, label_off, outer * inner)?;
        let y = wr(OP, "y", y, y_off, outer * inner)?;
        gather_at_label(OP, dim, inner, x, label, ignore_label, fill, y)
    }

    pub(super) fn affine_at_label_cpu(
        &self,
        (outer, dim, inner): (usize, usize, usize),
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        (alpha, beta): (f32, f32),
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "affine_at_label";
        let label = rd(OP, "label", label, label_off, outer * inner)?;
        let y = wr(OP, "y", y, y_off, outer * dim * inner)?;
        affine_at_label(OP, dim, inner, label, ignore_label, alpha, beta, y)
    }

    pub(super) fn top_k_hits_cpu(
        &self,
        (outer, dim, inner, top_k): (usize, usize, usize, usize),
        x: &CpuBuffer,
        x_off: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "top_k_hits";
        let x = rd(OP, "x", x, x_off, outer * dim * inner)?;
        let label = rd(OP, "label", label, label_off, outer * inner)?;
        let y = wr(OP, "y", y, y_off, outer * inner)?;
        top_k_hits(OP, dim, inner, top_k, x, label, ignore_label, y)
    }

    pub(super) fn sum_by_label_cpu(
        &self,
        (n, classes): (usize, usize),
        x: &CpuBuffer,
        x_off: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_by_label";
        let x = rd(OP, "x", x, x_off, n)?;
        let label = rd(OP, "label", label, label_off, n)?;
        let y = wr(OP, "y", y, y_off, classes)?;
        sum_by_label(OP, x, label, ignore_label, y)
    }

    pub(super) fn sigmoid_cross_entropy_cpu(
        &self,
        n: usize,
        x: &CpuBuffer,
        x_off: usize,
        t: &CpuBuffer,
        t_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sigmoid_cross_entropy";
        let x = rd(OP, "x", x, x_off, n)?;
        let t = rd(OP, "t", t, t_off, n)?;
        sigmoid_cross_entropy(self.par(), x, t, wr(OP, "y", y, y_off, n)?);
        Ok(())
    }
}

/// The class a stored label names (upstream's `static_cast<int>`: truncation toward zero).
fn class_of(label: f32) -> i32 {
    label as i32
}

fn ignored(class: i32, ignore_label: Option<i32>) -> bool {
    ignore_label == Some(class)
}

/// `y[i] = 0` where the label is `ignore_label`, else 1.
fn label_mask(labels: &[f32], ignore_label: Option<i32>, y: &mut [f32]) {
    for (y, &l) in y.iter_mut().zip(labels) {
        *y = if ignored(class_of(l), ignore_label) {
            0.0
        } else {
            1.0
        };
    }
}

/// `y[p] = x[o, label[p], j]`, or `fill` at ignored positions.
fn gather_at_label(
    op: &'static str,
    dim: usize,
    inner: usize,
    x: &[f32],
    labels: &[f32],
    ignore_label: Option<i32>,
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
fn affine_at_label(
    op: &'static str,
    dim: usize,
    inner: usize,
    labels: &[f32],
    ignore_label: Option<i32>,
    alpha: f32,
    beta: f32,
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
fn top_k_hits(
    op: &'static str,
    dim: usize,
    inner: usize,
    top_k: usize,
    x: &[f32],
    labels: &[f32],
    ignore_label: Option<i32>,
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
fn sum_by_label(
    op: &'static str,
    x: &[f32],
    labels: &[f32],
    ignore_label: Option<i32>,
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

/// `y[i] = ln(1 + exp(x - 2 x [x >= 0])) - x (t - [x >= 0])`, evaluated in f32 term by term as
/// upstream (src/caffe/layers/sigmoid_cross_entropy_loss_layer.cpp).
fn sigmoid_cross_entropy(par: Par<'_>, x: &[f32], t: &[f32], y: &mut [f32]) {
    elementwise::map2(par, Operand::Slice(x), Operand::Slice(t), y, |x, t| {
        let positive = if x >= 0.0 { 1.0 } else { 0.0 };
        let log_term = (1.0 + (x - 2.0 * x * positive).exp()).ln();
        log_term - x * (t - positive)
    });
}
