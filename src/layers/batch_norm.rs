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
    Axis, Backend, Binary, Broadcast, Scalar, Slice, SliceMut, Src, Unary, Views,
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
    /// Per channel: `-mean`.
    neg_mean: Option<B::Buffer>,
    /// Per channel: the variance, then `sqrt(variance + eps)`.
    variance: Option<B::Buffer>,
    /// Full size: `(x - mean)^2`, then `sqrt(variance + eps)` broadcast (kept for backward).
    temp: Option<B::Buffer>,
    /// Full size: the normalised output (kept for backward; later in-place layers may
    /// overwrite the top).
    x_norm: Option<B::Buffer>,
    /// Full size: a copy of the top diff when running in place.
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
            neg_mean: None,
            variance: None,
            temp: None,
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

    /// `dx` from the top diff `dy` (see upstream's derivation in batch_norm_layer.cpp):
    /// `(dy - mean(dy) - mean(dy y) y) / sqrt(var + eps)` in TRAIN, `dy / sqrt(var + eps)` with
    /// global statistics.
    fn input_gradient(
        &mut self,
        be: &B,
        dy: Slice<'_, B::Buffer>,
        mut dx: SliceMut<'_, B::Buffer>,
    ) -> Result<(), LayerError> {
        let (axis, c, count) = (self.axis, self.channels, self.count());
        let inv_m = self.inv_m();
        let std_dev = scratch(be, &mut self.temp, count)?.slice(0, count).src();
        if self.use_global_stats {
            be.binary(Binary::Div, dy.src(), std_dev, dx)?;
            return Ok(());
        }
        let y = scratch(be, &mut self.x_norm, count)?.slice(0, count).src();
        let mut sums = scratch(be, &mut self.mean, c)?.slice_mut(0, c);
        // sum(dy y) per channel, broadcast, times y.
        be.binary(Binary::Mul, y, dy.src(), dx.reborrow())?;
        be.sum_per_channel(axis, 1.0, dx.as_slice(), 0.0, sums.reborrow())?;
        be.fill(1.0, dx.reborrow())?;
        be.broadcast(
            Binary::Mul,
            Broadcast::PerChannel,
            axis,
            sums.as_slice(),
            Src::InPlace,
            dx.reborrow(),
        )?;
        be.binary(Binary::Mul, y, Src::InPlace, dx.reborrow())?;
        // + sum(dy) per channel.
        be.sum_per_channel(axis, 1.0, dy, 0.0, sums.reborrow())?;
        be.broadcast(
            Binary::Add,
            Broadcast::PerChannel,
            axis,
            sums.as_slice(),
            Src::InPlace,
            dx.reborrow(),
        )?;
        // dy - (...) / m, over the standard deviation.
        be.axpby(Scalar::Value(1.0), dy, -inv_m, dx.reborrow())?;
        be.binary(Binary::Div, Src::InPlace, std_dev, dx)?;
        Ok(())
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
        scratch(be, &mut self.neg_mean, c)?;
        scratch(be, &mut self.variance, c)?;
        scratch(be, &mut self.temp, count)?;
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
        let inv_m = self.inv_m();
        let global = self.use_global_stats;
        let mut mean = scratch(be, &mut self.mean, c)?.slice_mut(0, c);
        let mut neg_mean = scratch(be, &mut self.neg_mean, c)?.slice_mut(0, c);
        let mut variance = scratch(be, &mut self.variance, c)?.slice_mut(0, c);
        let mut temp = scratch(be, &mut self.temp, count)?.slice_mut(0, count);
        let x_norm = scratch(be, &mut self.x_norm, count)?.slice_mut(0, count);

        let y = match blobs.forward_io(0) {
            InOut::Separate { input, output } => {
                be.copy(input.data_view(), output.data_view_mut())?;
                output
            }
            InOut::Same(blob) => blob,
        };
        let mut y = y.data_view_mut();

        if global {
            global_statistics(be, params, mean.reborrow(), variance.reborrow())?;
        } else {
            be.sum_per_channel(axis, inv_m, y.as_slice(), 0.0, mean.reborrow())?;
        }
        be.scale(
            Scalar::Value(-1.0),
            mean.as_slice().src(),
            neg_mean.reborrow(),
        )?;
        let neg_mean = neg_mean.as_slice();
        be.broadcast(
            Binary::Add,
            Broadcast::PerChannel,
            axis,
            neg_mean,
            Src::InPlace,
            y.reborrow(),
        )?;

        if !global {
            // var = E((x - mean)^2), then the running sums.
            be.unary(Unary::Sqr, y.as_slice().src(), temp.reborrow())?;
            be.sum_per_channel(axis, inv_m, temp.as_slice(), 0.0, variance.reborrow())?;
            let batch = (mean.as_slice(), variance.as_slice());
            update_running_sums(be, self.moving_average_fraction, batch, count / c, params)?;
        }

        // Divide by sqrt(var + eps), broadcast into temp (kept for backward).
        be.unary(
            Unary::AddScalar(self.eps),
            Src::InPlace,
            variance.reborrow(),
        )?;
        be.unary(Unary::Sqrt, Src::InPlace, variance.reborrow())?;
        be.fill(1.0, temp.reborrow())?;
        let std_dev = variance.as_slice();
        be.broadcast(
            Binary::Mul,
            Broadcast::PerChannel,
            axis,
            std_dev,
            Src::InPlace,
            temp.reborrow(),
        )?;
        be.binary(
            Binary::Div,
            Src::InPlace,
            temp.as_slice().src(),
            y.reborrow(),
        )?;
        be.copy(y.as_slice(), x_norm)?;
        Ok(())
    }

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
        let count = self.count();
        match blobs.backward_io(0) {
            InOut::Separate {
                input: top,
                output: bottom,
            } => self.input_gradient(be, top.diff_view(), bottom.diff_view_mut()),
            InOut::Same(blob) => {
                // The diff is both dy and dx: keep dy aside.
                let mut dy = self.top_diff.take();
                let result = scratch(be, &mut dy, count).and_then(|dy| {
                    be.copy(blob.diff_view(), dy.slice_mut(0, count))?;
                    let dx = blob.diff_view_mut();
                    self.input_gradient(be, dy.slice(0, count), dx)
                });
                self.top_diff = dy;
                result
            }
        }
    }
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
