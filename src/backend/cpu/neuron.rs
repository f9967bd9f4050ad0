//! CPU ops added for the neuron and plumbing layers: PReLU, Concat/Slice (`copy_2d`), Eltwise
//! MAX (`running_argmax`, `copy_where_eq`) and ArgMax (`top_k_over_axis`). The trait impl in
//! `cpu/mod.rs` forwards to these methods.

use super::elementwise::{self, Operand};
use super::{operand, rd, wr, CpuBackend, CpuBuffer};
use crate::backend::{copy_2d_spans, invalid, Result, Src};

/// 1 when `cond`, else 0: keeps upstream's `dy * (x > 0)` arithmetic, NaN included.
#[inline]
fn ind(cond: bool) -> f32 {
    if cond {
        1.0
    } else {
        0.0
    }
}

impl CpuBackend {
    pub(super) fn prelu_forward_cpu(
        &self,
        (outer, channels, inner): (usize, usize, usize),
        slope: &CpuBuffer,
        slope_off: usize,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_forward";
        let len = outer * channels * inner;
        let slope = rd(OP, "slope", slope, slope_off, channels)?;
        let x = operand(OP, "x", x, len)?;
        let y = wr(OP, "y", y, y_off, len)?;
        // Upstream (src/caffe/layers/prelu_layer.cpp): max(x, 0) + slope min(x, 0).
        // A branch keeps NaN as NaN, as upstream's std::max/min do.
        let f = |a: f32, v: f32| if v > 0.0 { v } else { a * v };
        self.par().rows_mut(y, inner, inner, |r, row| {
            let a = slope[r % channels];
            match x {
                Operand::Same => row.iter_mut().for_each(|v| *v = f(a, *v)),
                Operand::Slice(x) => row
                    .iter_mut()
                    .zip(&x[r * inner..(r + 1) * inner])
                    .for_each(|(v, &u)| *v = f(a, u)),
            }
        });
        Ok(())
    }

    pub(super) fn prelu_backward_cpu(
        &self,
        (outer, channels, inner): (usize, usize, usize),
        slope: &CpuBuffer,
        slope_off: usize,
        x: &CpuBuffer,
        x_off: usize,
        dy: Src<'_, CpuBuffer>,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_backward";
        let len = outer * channels * inner;
        let slope = rd(OP, "slope", slope, slope_off, channels)?;
        let x = rd(OP, "x", x, x_off, len)?;
        let dy = operand(OP, "dy", dy, len)?;
        let dx = wr(OP, "dx", dx, dx_off, len)?;
        self.par().rows_mut(dx, inner, inner, |r, row| {
            let a = slope[r % channels];
            let xr = &x[r * inner..(r + 1) * inner];
            let g = |u: f32, d: f32| d * (ind(u > 0.0) + a * ind(u <= 0.0));
            match dy {
                Operand::Same => row.iter_mut().zip(xr).for_each(|(v, &u)| *v = g(u, *v)),
                Operand::Slice(dy) => row
                    .iter_mut()
                    .zip(xr.iter().zip(&dy[r * inner..(r + 1) * inner]))
                    .for_each(|(v, (&u, &d))| *v = g(u, d)),
            }
        });
        Ok(())
    }

    pub(super) fn prelu_slope_grad_cpu(
        &self,
        (outer, channels, inner): (usize, usize, usize),
        x: &CpuBuffer,
        x_off: usize,
        dy: &CpuBuffer,
        dy_off: usize,
        dslope: &mut CpuBuffer,
        dslope_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_slope_grad";
        let len = outer * channels * inner;
        let x = rd(OP, "x", x, x_off, len)?;
        let dy = rd(OP, "dy", dy, dy_off, len)?;
        let dslope = wr(OP, "dslope", dslope, dslope_off, channels)?;
        if inner == 0 {
            return Ok(());
        }
        // Accumulated in memory order straight into dslope, as upstream's CPU loop.
        for (r, (xr, dr)) in x.chunks(inner).zip(dy.chunks(inner)).enumerate() {
            let acc = &mut dslope[r % channels];
            for (&u, &d) in xr.iter().zip(dr) {
                *acc += d * u * ind(u <= 0.0);
            }
        }
        Ok(())
    }

    pub(super) fn copy_2d_cpu(
        &self,
        (rows, cols): (usize, usize),
        x: &CpuBuffer,
        x_off: usize,
        x_stride: usize,
        y: &mut CpuBuffer,
        y_off: usize,
        y_stride: usize,
    ) -> Result<()> {
        const OP: &str = "copy_2d";
        let Some((x_span, y_span)) = copy_2d_spans(OP, (rows, cols), x_stride, y_stride)? else {
            return Ok(());
        };
        let x = rd(OP, "x", x, x_off, x_span)?;
        let y = wr(OP, "y", y, y_off, y_span)?;
        for r in 0..rows {
            let (xs, ys) = (r * x_stride, r * y_stride);
            y[ys..ys + cols].copy_from_slice(&x[xs..xs + cols]);
        }
        Ok(())
    }

    pub(super) fn running_argmax_cpu(
        &self,
        n: usize,
        index: f32,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
        mask: &mut CpuBuffer,
        mask_off: usize,
    ) -> Result<()> {
        const OP: &str = "running_argmax";
        let x = rd(OP, "x", x, x_off, n)?;
        let y = wr(OP, "y", y, y_off, n)?;
        let mask = wr(OP, "mask", mask, mask_off, n)?;
        for ((&v, m), k) in x.iter().zip(y.iter_mut()).zip(mask.iter_mut()) {
            if v > *m {
                *m = v;
                *k = index;
            }
        }
        Ok(())
    }

    pub(super) fn copy_where_eq_cpu(
        &self,
        n: usize,
        mask: &CpuBuffer,
        mask_off: usize,
        value: f32,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "copy_where_eq";
        let mask = rd(OP, "mask", mask, mask_off, n)?;
        let x = rd(OP, "x", x, x_off, n)?;
        let y = wr(OP, "y", y, y_off, n)?;
        let (m, x) = (Operand::Slice(mask), Operand::Slice(x));
        elementwise::map2(self.par(), m, x, y, |m, v| if m == value { v } else { 0.0 });
        Ok(())
    }

    pub(super) fn top_k_over_axis_cpu(
        &self,
        (outer, dim, inner, k): (usize, usize, usize, usize),
        x: &CpuBuffer,
        x_off: usize,
        values: &mut CpuBuffer,
        values_off: usize,
        indices: &mut CpuBuffer,
        indices_off: usize,
    ) -> Result<()> {
        const OP: &str = "top_k_over_axis";
        if k > dim {
            return Err(invalid(
                OP,
                format!("k = {k} exceeds the axis length {dim}"),
            ));
        }
        if dim > 1 << 24 {
            return Err(invalid(
                OP,
                format!("an axis of {dim} is too long for exact f32 indices"),
            ));
        }
        let x = rd(OP, "x", x, x_off, outer * dim * inner)?;
        let out_len = outer * k * inner;
        let values = wr(OP, "values", values, values_off, out_len)?;
        let indices = wr(OP, "indices", indices, indices_off, out_len)?;
        if k == 0 {
            return Ok(());
        }
        // Descending by (value, index), as upstream's std::greater on pairs
        // (src/caffe/layers/argmax_layer.cpp): equal values rank the larger index first.
        let rank = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1));
        let mut pairs = Vec::with_capacity(dim);
        for o in 0..outer {
            for j in 0..inner {
                pairs.clear();
                pairs.extend((0..dim).map(|c| (x[(o * dim + c) * inner + j], c)));
                if k < dim {
                    pairs.select_nth_unstable_by(k - 1, rank);
                }
                pairs[..k].sort_unstable_by(rank);
                for (r, &(v, c)) in pairs[..k].iter().enumerate() {
                    let at = (o * k + r) * inner + j;
                    values[at] = v;
                    indices[at] = c as f32;
                }
            }
        }
        Ok(())
    }
}
