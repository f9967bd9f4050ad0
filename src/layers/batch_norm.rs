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

use crate::backend::{Backend, Src};
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
    num: usize,
    spatial: usize,
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
            num: 0,
            spatial: 0,
            mean: None,
            neg_mean: None,
            variance: None,
            temp: None,
            x_norm: None,
            top_diff: None,
        })
    }

    fn count(&self) -> usize {
        self.num * self.channels * self.spatial
    }

    /// `1 / (num * spatial)`, computed in f64 as upstream's `1. / (num * spatial_dim)`.
    fn inv_m(&self) -> f32 {
        (1.0 / (self.num * self.spatial) as f64) as f32
    }

    /// `dx` from the top diff `dy` (see upstream's derivation in batch_norm_layer.cpp):
    /// `(dy - mean(dy) - mean(dy y) y) / sqrt(var + eps)` in TRAIN, `dy / sqrt(var + eps)` with
    /// global statistics.
    fn input_gradient(
        &mut self,
        be: &B,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Result<(), LayerError> {
        let (n, c, s) = (self.num, self.channels, self.spatial);
        let count = self.count();
        let inv_m = self.inv_m();
        let temp = scratch(be, &mut self.temp, count)?;
        if self.use_global_stats {
            be.div(count, Src::At(dy, 0), Src::At(temp, 0), dx, 0)?;
            return Ok(());
        }
        let y = scratch(be, &mut self.x_norm, count)?;
        let sums = scratch(be, &mut self.mean, c)?;
        // sum(dy y) per channel, broadcast, times y.
        be.mul(count, Src::At(y, 0), Src::At(dy, 0), dx, 0)?;
        be.sum_per_channel(n, c, s, 1.0, dx, 0, 0.0, sums, 0)?;
        be.set(count, 1.0, dx, 0)?;
        be.mul_per_channel(n, c, s, sums, 0, Src::InPlace, dx, 0)?;
        be.mul(count, Src::At(y, 0), Src::InPlace, dx, 0)?;
        // + sum(dy) per channel.
        be.sum_per_channel(n, c, s, 1.0, dy, 0, 0.0, sums, 0)?;
        be.add_per_channel(n, c, s, sums, 0, dx, 0)?;
        // dy - (...) / m, over the standard deviation.
        be.axpby(count, 1.0, dy, 0, -inv_m, dx, 0)?;
        be.div(count, Src::InPlace, Src::At(temp, 0), dx, 0)?;
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
        self.num = bottom.shape_at(0)?;
        self.spatial = if bottom.num_axes() == 1 {
            1
        } else {
            bottom.count_from(2)?
        };
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
        let (n, c, s) = (self.num, self.channels, self.spatial);
        let count = self.count();
        let inv_m = self.inv_m();
        let maf = self.moving_average_fraction;
        let global = self.use_global_stats;
        let mean = scratch(be, &mut self.mean, c)?;
        let neg_mean = scratch(be, &mut self.neg_mean, c)?;
        let variance = scratch(be, &mut self.variance, c)?;
        let temp = scratch(be, &mut self.temp, count)?;
        let x_norm = scratch(be, &mut self.x_norm, count)?;

        let y = match blobs.forward_io(0) {
            InOut::Separate { input, output } => {
                be.copy(count, input.data(), 0, output.data_mut(), 0)?;
                output
            }
            InOut::Same(blob) => blob,
        };
        let y = y.data_mut();

        if global {
            // The running sums over their scale factor.
            let mut factor = [0.0f32];
            be.download(params.get(2).data(), 0, &mut factor)?;
            let factor = if factor[0] == 0.0 {
                0.0
            } else {
                1.0 / factor[0]
            };
            be.scale(c, factor, Src::At(params.get(0).data(), 0), mean, 0)?;
            be.scale(c, factor, Src::At(params.get(1).data(), 0), variance, 0)?;
        } else {
            be.sum_per_channel(n, c, s, inv_m, y, 0, 0.0, mean, 0)?;
        }
        be.scale(c, -1.0, Src::At(mean, 0), neg_mean, 0)?;
        be.add_per_channel(n, c, s, neg_mean, 0, y, 0)?;

        if !global {
            // var = E((x - mean)^2), then the running sums.
            be.sqr(count, Src::At(y, 0), temp, 0)?;
            be.sum_per_channel(n, c, s, inv_m, temp, 0, 0.0, variance, 0)?;
            let factor_blob = params.get_mut(2).data_mut();
            be.scale(1, maf, Src::InPlace, factor_blob, 0)?;
            be.add_scalar(1, 1.0, factor_blob, 0)?;
            be.axpby(c, 1.0, mean, 0, maf, params.get_mut(0).data_mut(), 0)?;
            // Unbiased variance (src/caffe/layers/batch_norm_layer.cpp): m / (m - 1), in f32.
            let m = count / c;
            let correction = if m > 1 {
                m as f32 / (m - 1) as f32
            } else {
                1.0
            };
            be.axpby(
                c,
                correction,
                variance,
                0,
                maf,
                params.get_mut(1).data_mut(),
                0,
            )?;
        }

        // Divide by sqrt(var + eps), broadcast into temp (kept for backward).
        be.add_scalar(c, self.eps, variance, 0)?;
        be.sqrt(c, Src::InPlace, variance, 0)?;
        be.set(count, 1.0, temp, 0)?;
        be.mul_per_channel(n, c, s, variance, 0, Src::InPlace, temp, 0)?;
        be.div(count, Src::InPlace, Src::At(temp, 0), y, 0)?;
        be.copy(count, y, 0, x_norm, 0)?;
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
            } => self.input_gradient(be, top.diff(), bottom.diff_mut()),
            InOut::Same(blob) => {
                // The diff is both dy and dx: keep dy aside.
                let mut dy = self.top_diff.take();
                let result = scratch(be, &mut dy, count).and_then(|dy| {
                    be.copy(count, blob.diff(), 0, dy, 0)?;
                    self.input_gradient(be, dy, blob.diff_mut())
                });
                self.top_diff = dy;
                result
            }
        }
    }
}
