//! BatchNorm: normalises each channel to zero mean and unit variance
//! (upstream: src/caffe/layers/batch_norm_layer.cpp).
//!
//! `batch_norm_param { use_global_stats moving_average_fraction: 0.999 eps: 1e-5 }`. The
//! bottom is `(num, channels, spatial...)` (a 1-axis bottom is one channel). Three parameter
//! blobs hold running sums: the mean `[C]`, the variance `[C]` and their scale factor `[1]`,
//! all starting at 0. In TRAIN (`use_global_stats` false, the default outside TEST) the batch
//! statistics normalise the input and update the running sums:
//! `s = maf s + 1`, `mean = maf mean + batch_mean`,
//! `var = maf var + m / (m - 1) batch_var` with `m = count / C`. With `use_global_stats` the
//! running sums divided by `s` (0 when `s` is 0) normalise instead. No learned scale or shift:
//! a Scale layer follows. Runs in place.

use crate::backend::{
    Axis, Backend, BackendError, BatchNormOutput, BatchStatistics, Binary, Broadcast, Scalar,
    Slice, SliceMut, Src, Unary, Views,
};
use crate::blob::Blob;
use crate::layers::loss::scratch;
use crate::layers::{BlobCounts, Blobs, Context, InOut, Layer, LayerError, Params};
use crate::proto::caffe::{LayerParameter, Phase};

/// The BatchNorm layer.
pub struct BatchNormLayer<B: Backend> {
    /// `batch_norm_param.use_global_stats` as given; unset follows the phase.
    use_global_stats_param: Option<bool>,
    use_global_stats: bool,
    moving_average_fraction: f32,
    eps: f32,
    channels: usize,
    /// The bottom as `num x channels x spatial`.
    axis: Axis,
    /// Per channel: the mean, then scratch for backward's sums.
    mean: Option<B::Buffer>,
    /// Per channel: the variance.
    variance: Option<B::Buffer>,
    /// Per channel: `sqrt(variance + eps)` (kept for backward).
    std: Option<B::Buffer>,
    /// Full size: the normalised output (kept for backward; later in-place layers may
    /// overwrite the top).
    x_norm: Option<B::Buffer>,
    /// Full size: a copy of the top diff when running in place without the fused ops.
    top_diff: Option<B::Buffer>,
}

impl<B: Backend> BatchNormLayer<B> {
    /// Reads `batch_norm_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.batch_norm_param.unwrap_or_default();
        let eps = p.eps();
        if eps.is_nan() || eps < 0.0 {
            return Err(LayerError::invalid(format!(
                "batch_norm_param.eps must be non-negative, got {eps}"
            )));
        }
        Ok(BatchNormLayer {
            use_global_stats_param: p.use_global_stats,
            use_global_stats: false,
            moving_average_fraction: p.moving_average_fraction(),
            eps,
            channels: 0,
            axis: Axis::new(0, 0, 0),
            mean: None,
            variance: None,
            std: None,
            x_norm: None,
            top_diff: None,
        })
    }

    fn count(&self) -> usize {
        self.axis.outer * self.axis.dim * self.axis.inner
    }

    /// `1 / (num * spatial)`, computed in f64 as upstream's `1. / (num * spatial_dim)`.
    fn inv_m(&self) -> f32 {
        (1.0 / (self.axis.outer * self.axis.inner) as f64) as f32
    }
}

impl<B: Backend> Layer<B> for BatchNormLayer<B> {
    fn layer_type(&self) -> &'static str {
        "BatchNorm"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn supports_in_place(&self) -> bool {
        true
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        self.use_global_stats = self
            .use_global_stats_param
            .unwrap_or(ctx.phase == Phase::Test);
        let bottom = blobs.bottom(0);
        self.channels = if bottom.num_axes() == 1 {
            1
        } else {
            bottom.shape_at(1)?
        };
        // Mean, variance and their scale factor, zeroed (Blob::new zeroes).
        params.push(Blob::new(ctx.backend, &[self.channels])?);
        params.push(Blob::new(ctx.backend, &[self.channels])?);
        params.push(Blob::new(ctx.backend, &[1])?);
        Ok(())
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let channels = if bottom.num_axes() == 1 {
            1
        } else {
            bottom.shape_at(1)?
        };
        if channels != self.channels {
            return Err(LayerError::invalid(format!(
                "BatchNorm was set up for {} channels but bottom {} has {channels}",
                self.channels,
                bottom.shape_string()
            )));
        }
        let spatial = if bottom.num_axes() == 1 {
            1
        } else {
            bottom.count_from(2)?
        };
        self.axis = Axis::new(bottom.shape_at(0)?, channels, spatial);
        if !blobs.is_in_place(0) {
            let shape = blobs.bottom(0).shape().to_vec();
            blobs.top_mut(0).reshape(&shape)?;
        }
        let (be, c, count) = (ctx.backend, self.channels, self.count());
        scratch(be, &mut self.mean, c)?;
        scratch(be, &mut self.variance, c)?;
        scratch(be, &mut self.std, c)?;
        scratch(be, &mut self.x_norm, count)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let (axis, c, count) = (self.axis, self.channels, self.count());
        let inv_count = self.inv_m();
        let mean = scratch(be, &mut self.mean, c)?;
        let variance = scratch(be, &mut self.variance, c)?;
        let std = scratch(be, &mut self.std, c)?.slice_mut(0, c);
        let x_norm = scratch(be, &mut self.x_norm, count)?.slice_mut(0, count);
        let statistics = if self.use_global_stats {
            global_statistics(be, params, mean.slice_mut(0, c), variance.slice_mut(0, c))?;
            BatchStatistics::Given {
                mean: mean.slice(0, c),
                variance: variance.slice(0, c),
            }
        } else {
            BatchStatistics::Batch {
                inv_count,
                mean: mean.slice_mut(0, c),
                variance: variance.slice_mut(0, c),
            }
        };
        let (x, y) = match blobs.forward_io(0) {
            InOut::Separate { input, output } => (input.data_view().src(), output),
            InOut::Same(blob) => (Src::InPlace, blob),
        };
        let out = BatchNormOutput {
            y: y.data_view_mut(),
            x_norm,
            std,
        };
        if be.capabilities().fused_batch_norm {
            be.batch_norm_forward(axis, self.eps, statistics, x, out)?;
        } else {
            composed_forward(be, axis, self.eps, statistics, x, out)?;
        }
        if !self.use_global_stats {
            let batch = (mean.slice(0, c), variance.slice(0, c));
            update_running_sums(be, self.moving_average_fraction, batch, count / c, params)?;
        }
        Ok(())
    }

    /// `dx` from the top diff `dy` (see upstream's derivation in batch_norm_layer.cpp):
    /// `(dy - mean(dy) - mean(dy y) y) / sqrt(var + eps)` in TRAIN, `dy / sqrt(var + eps)` with
    /// global statistics.
    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if !propagate_down[0] {
            return Ok(());
        }
        let be = ctx.backend;
        let (axis, c, count) = (self.axis, self.channels, self.count());
        let inv_m = self.inv_m();
        let std = scratch(be, &mut self.std, c)?.slice(0, c);
        let (dy, mut dx) = match blobs.backward_io(0) {
            InOut::Separate { input, output } => (input.diff_view().src(), output.diff_view_mut()),
            InOut::Same(blob) => (Src::InPlace, blob.diff_view_mut()),
        };
        if self.use_global_stats {
            be.broadcast(Binary::Div, Broadcast::PerChannel, axis, std, dy, dx)?;
            return Ok(());
        }
        let y = scratch(be, &mut self.x_norm, count)?.slice(0, count);
        if be.capabilities().fused_batch_norm {
            be.batch_norm_backward(axis, inv_m, y, std, dy, dx)?;
            return Ok(());
        }
        let sums = scratch(be, &mut self.mean, c)?.slice_mut(0, c);
        match dy {
            Src::Slice(dy) => composed_backward(be, axis, inv_m, (y, std), dy, sums, dx)?,
            Src::InPlace => {
                // The diff is both dy and dx: keep dy aside.
                let dy = scratch(be, &mut self.top_diff, count)?;
                be.copy(dx.as_slice(), dy.slice_mut(0, count))?;
                composed_backward(
                    be,
                    axis,
                    inv_m,
                    (y, std),
                    dy.slice(0, count),
                    sums,
                    dx.reborrow(),
                )?;
            }
        }
        Ok(())
    }
}

/// [`Backend::batch_norm_forward`] from the element-wise ops, broadcasts and channel sums, for
/// backends without it (and the bits the fused op must give).
pub(crate) fn composed_forward<B: Backend>(
    be: &B,
    axis: Axis,
    eps: f32,
    statistics: BatchStatistics<'_, B::Buffer>,
    x: Src<'_, B::Buffer>,
    out: BatchNormOutput<'_, B::Buffer>,
) -> Result<(), BackendError> {
    let BatchNormOutput {
        mut y,
        mut x_norm,
        mut std,
    } = out;
    if let Src::Slice(x) = x {
        be.copy(x, y.reborrow())?;
    }
    let per_channel = Broadcast::PerChannel;
    let mut statistics = statistics;
    if let BatchStatistics::Batch {
        inv_count, mean, ..
    } = &mut statistics
    {
        be.sum_per_channel(axis, *inv_count, y.as_slice(), 0.0, mean.reborrow())?;
    }
    let mean = statistics.mean();
    be.broadcast(
        Binary::Sub,
        per_channel,
        axis,
        mean,
        Src::InPlace,
        y.reborrow(),
    )?;
    if let BatchStatistics::Batch {
        inv_count,
        variance,
        ..
    } = &mut statistics
    {
        // x_norm holds the squares until it holds its own values.
        be.unary(Unary::Sqr, y.as_slice().src(), x_norm.reborrow())?;
        be.sum_per_channel(
            axis,
            *inv_count,
            x_norm.as_slice(),
            0.0,
            variance.reborrow(),
        )?;
    }
    be.unary(
        Unary::AddScalar(eps),
        statistics.variance().src(),
        std.reborrow(),
    )?;
    be.unary(Unary::Sqrt, Src::InPlace, std.reborrow())?;
    be.broadcast(
        Binary::Div,
        per_channel,
        axis,
        std.as_slice(),
        Src::InPlace,
        y.reborrow(),
    )?;
    be.copy(y.as_slice(), x_norm)?;
    Ok(())
}

/// [`Backend::batch_norm_backward`] from the other ops, for backends without it (and the bits
/// the fused op must give): `saved` is forward's `(x_norm, std)`, `sums` per-channel scratch,
/// `dy` and `dx` distinct.
pub(crate) fn composed_backward<B: Backend>(
    be: &B,
    axis: Axis,
    inv_count: f32,
    (y, std): (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
    dy: Slice<'_, B::Buffer>,
    mut sums: SliceMut<'_, B::Buffer>,
    mut dx: SliceMut<'_, B::Buffer>,
) -> Result<(), BackendError> {
    let per_channel = Broadcast::PerChannel;
    // y sum(dy y) per channel ...
    be.binary(Binary::Mul, y.src(), dy.src(), dx.reborrow())?;
    be.sum_per_channel(axis, 1.0, dx.as_slice(), 0.0, sums.reborrow())?;
    be.broadcast(
        Binary::Mul,
        per_channel,
        axis,
        sums.as_slice(),
        y.src(),
        dx.reborrow(),
    )?;
    // ... + sum(dy) per channel ...
    be.sum_per_channel(axis, 1.0, dy, 0.0, sums.reborrow())?;
    be.broadcast(
        Binary::Add,
        per_channel,
        axis,
        sums.as_slice(),
        Src::InPlace,
        dx.reborrow(),
    )?;
    // ... then dy - (...) / m, over the standard deviation.
    be.axpby(Scalar::Value(1.0), dy, -inv_count, dx.reborrow())?;
    be.broadcast(Binary::Div, per_channel, axis, std, Src::InPlace, dx)?;
    Ok(())
}

/// The running means and variances (parameters 0 and 1) over their scale factor (parameter 2;
/// 0 while it is 0), into `mean` and `variance`.
fn global_statistics<B: Backend>(
    be: &B,
    params: &Params<'_, B>,
    mean: SliceMut<'_, B::Buffer>,
    variance: SliceMut<'_, B::Buffer>,
) -> Result<(), LayerError> {
    let mut factor = [0.0f32];
    be.download(params.get(2).data_view(), &mut factor)?;
    let factor = if factor[0] == 0.0 {
        0.0
    } else {
        1.0 / factor[0]
    };
    be.scale(factor.into(), params.get(0).data_view().src(), mean)?;
    be.scale(factor.into(), params.get(1).data_view().src(), variance)?;
    Ok(())
}

/// Folds a batch's per-channel `mean` and `variance`, each over `m` values, into the running
/// sums (parameters 0 to 2) with the moving average fraction `maf`.
fn update_running_sums<B: Backend>(
    be: &B,
    maf: f32,
    (mean, variance): (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
    m: usize,
    params: &mut Params<'_, B>,
) -> Result<(), LayerError> {
    let mut factor = params.get_mut(2).data_view_mut();
    be.scale(maf.into(), Src::InPlace, factor.reborrow())?;
    be.unary(Unary::AddScalar(1.0), Src::InPlace, factor)?;
    let mean_sum = params.get_mut(0).data_view_mut();
    be.axpby(Scalar::Value(1.0), mean, maf, mean_sum)?;
    // Unbiased variance (src/caffe/layers/batch_norm_layer.cpp): m / (m - 1), in f32.
    let correction = if m > 1 {
        m as f32 / (m - 1) as f32
    } else {
        1.0
    };
    let variance_sum = params.get_mut(1).data_view_mut();
    be.axpby(correction.into(), variance, maf, variance_sum)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{composed_backward, composed_forward};
    use crate::backend::cpu::{CpuBackend, CpuBuffer};
    use crate::backend::{Axis, Backend, BatchNormOutput, BatchStatistics, Src, Views};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(7);
                (h % 20011) as f32 / 2000.0 - 4.0
            })
            .collect()
    }

    fn bits(v: &CpuBuffer) -> Vec<u32> {
        v.as_slice().iter().map(|x| x.to_bits()).collect()
    }

    /// One forward pass: `(y, x_norm, std, mean, variance)`, fused or composed, in place or not,
    /// with the batch's statistics or given ones.
    fn forward(
        be: &CpuBackend,
        axis: Axis,
        fused: bool,
        in_place: bool,
        batch: bool,
    ) -> [CpuBuffer; 5] {
        let (count, c) = (axis.outer * axis.dim * axis.inner, axis.dim);
        let x = CpuBuffer::from_vec(values(count, 1));
        let mut y = CpuBuffer::from_vec(if in_place {
            values(count, 1)
        } else {
            vec![f32::NAN; count]
        });
        let mut x_norm = CpuBuffer::from_vec(vec![f32::NAN; count]);
        let mut std = CpuBuffer::from_vec(vec![f32::NAN; c]);
        let (mean, variance) = if batch {
            (vec![f32::NAN; c], vec![f32::NAN; c])
        } else {
            (values(c, 2), values(c, 3).iter().map(|v| v.abs()).collect())
        };
        let (mut mean, mut variance) = (CpuBuffer::from_vec(mean), CpuBuffer::from_vec(variance));
        let statistics = if batch {
            BatchStatistics::Batch {
                inv_count: (1.0 / (axis.outer * axis.inner) as f64) as f32,
                mean: mean.whole_mut(),
                variance: variance.whole_mut(),
            }
        } else {
            BatchStatistics::Given {
                mean: mean.whole(),
                variance: variance.whole(),
            }
        };
        let x = if in_place {
            Src::InPlace
        } else {
            x.whole().src()
        };
        let out = BatchNormOutput {
            y: y.whole_mut(),
            x_norm: x_norm.whole_mut(),
            std: std.whole_mut(),
        };
        if fused {
            be.batch_norm_forward(axis, 1e-3, statistics, x, out)
                .unwrap();
        } else {
            composed_forward(be, axis, 1e-3, statistics, x, out).unwrap();
        }
        [y, x_norm, std, mean, variance]
    }

    /// The CPU's fused BatchNorm passes give the bits of the composition the other backends
    /// run, on one thread and on three, for shapes with rows shorter and longer than a block
    /// of lanes.
    #[test]
    fn fused_batch_norm_gives_the_composed_bits() {
        for threads in [1, 3] {
            let be = CpuBackend::new(threads).unwrap();
            for axis in [
                Axis::new(5, 3, 37),
                Axis::new(2, 40, 1),
                Axis::new(4, 7, 1100),
            ] {
                for (in_place, batch) in
                    [(false, true), (true, true), (false, false), (true, false)]
                {
                    let fused = forward(&be, axis, true, in_place, batch);
                    let composed = forward(&be, axis, false, in_place, batch);
                    for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
                        assert_eq!(
                            bits(a),
                            bits(b),
                            "{axis:?} in place {in_place} batch {batch}: output {i}"
                        );
                    }
                }
                let [y, .., std, _, _] = forward(&be, axis, true, false, true);
                let count = y.as_slice().len();
                let dy = CpuBuffer::from_vec(values(count, 4));
                let mut composed = CpuBuffer::from_vec(vec![f32::NAN; count]);
                let mut sums = CpuBuffer::from_vec(vec![f32::NAN; axis.dim]);
                let inv_count = 0.37;
                composed_backward(
                    &be,
                    axis,
                    inv_count,
                    (y.whole(), std.whole()),
                    dy.whole(),
                    sums.whole_mut(),
                    composed.whole_mut(),
                )
                .unwrap();
                let mut fused = CpuBuffer::from_vec(vec![f32::NAN; count]);
                be.batch_norm_backward(
                    axis,
                    inv_count,
                    y.whole(),
                    std.whole(),
                    dy.whole().src(),
                    fused.whole_mut(),
                )
                .unwrap();
                assert_eq!(bits(&fused), bits(&composed), "{axis:?}: backward");
                let mut in_place = CpuBuffer::from_vec(values(count, 4));
                be.batch_norm_backward(
                    axis,
                    inv_count,
                    y.whole(),
                    std.whole(),
                    Src::InPlace,
                    in_place.whole_mut(),
                )
                .unwrap();
                assert_eq!(bits(&in_place), bits(&composed), "{axis:?}: in place");
            }
        }
    }
}
