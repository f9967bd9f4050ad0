//! Local response normalisation (upstream: src/caffe/layers/lrn_layer.cpp).
//!
//! * ACROSS_CHANNELS: `y = x (k + alpha / n sum x^2)^-beta`, the sum over the `n = local_size`
//!   channels centred on each channel (zero beyond the ends), computed by the backend's
//!   `lrn_across_*` ops; the scale `k + alpha / n sum x^2` is kept for backward.
//! * WITHIN_CHANNEL: `y = x (1 + alpha / n^2 sum x^2)^-beta`, the sum over the `n x n` window
//!   centred on each pixel of its plane (zero-padded). Note `k` is not used: upstream builds this
//!   region from Split, Power (square), AVE Pooling (kernel n, pad (n-1)/2, stride 1, so every
//!   divisor is n^2), Power (`(1 + alpha s)^-beta`) and an Eltwise product; here the backend's
//!   `lrn_within_*` ops run that composition (the CPU backend fused, with the same bits).

use crate::backend::{
    Backend, DeviceBuffer, LrnGeom, LrnSaved, LrnWithin, PoolGeom, Slice, SliceMut, Views,
};
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::lrn_parameter::NormRegion;
use crate::proto::caffe::LayerParameter;

/// The LRN layer.
pub struct LrnLayer<B: Backend> {
    region: NormRegion,
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
    /// ACROSS: the scale. WITHIN: the window means of `x^2`.
    scale: Option<B::Buffer>,
    /// WITHIN: `(1 + alpha mean)^-beta`.
    power: Option<B::Buffer>,
    /// WITHIN: two scratch buffers (squares in forward; backward's intermediates).
    scratch: [Option<B::Buffer>; 2],
    count: usize,
    lrn: Option<LrnGeom>,
    within: Option<LrnWithin>,
}

impl<B: Backend> LrnLayer<B> {
    /// Reads and checks `lrn_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.lrn_param.unwrap_or_default();
        let region = NormRegion::try_from(p.norm_region.unwrap_or(0)).map_err(|_| {
            LayerError::invalid(format!(
                "lrn_param.norm_region: unknown region {:?}",
                p.norm_region
            ))
        })?;
        let size = p.local_size() as usize;
        if size % 2 != 1 {
            return Err(LayerError::invalid(format!(
                "lrn_param.local_size: LRN only supports odd values for local_size, got {size}"
            )));
        }
        Ok(LrnLayer {
            region,
            size,
            alpha: p.alpha(),
            beta: p.beta(),
            k: p.k(),
            scale: None,
            power: None,
            scratch: [None, None],
            count: 0,
            lrn: None,
            within: None,
        })
    }
}

fn grow<B: Backend>(be: &B, buf: &mut Option<B::Buffer>, len: usize) -> Result<(), LayerError> {
    if buf.as_ref().is_none_or(|b| b.len() < len) {
        *buf = Some(be.alloc(len)?);
    }
    Ok(())
}

/// The first `len` elements of a buffer allocated in reshape, to read.
fn view<T: DeviceBuffer>(b: &Option<T>, len: usize) -> Slice<'_, T> {
    b.as_ref()
        .expect("buffer allocated in reshape")
        .slice(0, len)
}

/// The first `len` elements of a buffer allocated in reshape, to write.
fn view_mut<T: DeviceBuffer>(b: &mut Option<T>, len: usize) -> SliceMut<'_, T> {
    b.as_mut()
        .expect("buffer allocated in reshape")
        .slice_mut(0, len)
}

impl<B: Backend> Layer<B> for LrnLayer<B> {
    fn layer_type(&self) -> &'static str {
        "LRN"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let shape = blobs.bottom(0).shape().to_vec();
        let &[num, channels, height, width] = shape.as_slice() else {
            return Err(LayerError::invalid(format!(
                "LRN: input must have 4 axes (num, channels, height, width), got shape {}",
                blobs.bottom(0).shape_string()
            )));
        };
        blobs.top_mut(0).reshape(&shape)?;
        let be = ctx.backend;
        self.count = num * channels * height * width;
        grow(be, &mut self.scale, self.count)?;
        match self.region {
            NormRegion::AcrossChannels => {
                self.lrn = Some(LrnGeom {
                    num,
                    channels,
                    spatial: height * width,
                    size: self.size,
                    alpha: self.alpha,
                    beta: self.beta,
                    k: self.k,
                });
            }
            NormRegion::WithinChannel => {
                self.within = Some(LrnWithin {
                    window: PoolGeom::lrn_window(num * channels, height, width, self.size),
                    alpha: self.alpha,
                    beta: self.beta,
                });
                grow(be, &mut self.power, self.count)?;
                for s in &mut self.scratch {
                    grow(be, s, self.count)?;
                }
            }
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (be, n) = (ctx.backend, self.count);
        let (bottom, mut top) = blobs.forward_all()?;
        let (x, y) = (bottom[0].data_view(), top[0].data_view_mut());
        match self.region {
            NormRegion::AcrossChannels => {
                let g = self.lrn.as_ref().expect("geometry set in reshape");
                be.lrn_across_forward(g, x, view_mut(&mut self.scale, n), y)?;
            }
            NormRegion::WithinChannel => {
                let l = self.within.as_ref().expect("geometry set in reshape");
                let saved = [view_mut(&mut self.scale, n), view_mut(&mut self.power, n)];
                let squares = view_mut(&mut self.scratch[0], n);
                be.lrn_within_forward(l, x, saved, y, squares)?;
            }
        }
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
        let (be, n) = (ctx.backend, self.count);
        let (top, mut bottom) = blobs.backward_all()?;
        let (y, dy) = (top[0].data_view(), top[0].diff_view());
        let (x, dx) = bottom[0].data_and_diff_mut();
        match self.region {
            NormRegion::AcrossChannels => {
                let g = self.lrn.as_ref().expect("geometry set in reshape");
                let scale = view(&self.scale, n);
                be.lrn_across_backward(g, LrnSaved { x, y, scale }, dy, dx)?;
            }
            NormRegion::WithinChannel => {
                let l = self.within.as_ref().expect("geometry set in reshape");
                let (mean, power) = (view(&self.scale, n), view(&self.power, n));
                let forward = LrnSaved {
                    x,
                    y: mean,
                    scale: power,
                };
                let [a, b] = &mut self.scratch;
                be.lrn_within_backward(l, forward, dy, dx, [view_mut(a, n), view_mut(b, n)])?;
            }
        }
        Ok(())
    }
}
