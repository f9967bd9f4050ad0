//! Pooling (upstream: src/caffe/layers/pooling_layer.cpp): MAX and AVE over 2-D windows of each
//! `(num, channel)` plane, with padding, stride, `global_pooling` and `round_mode`.
//!
//! * Output size: `ceil((size + 2 pad - kernel) / stride) + 1` (CEIL, the default) or with
//!   `floor` (FLOOR); then, if there is any padding, the last window along each axis is
//!   dropped when it would start in the padding rather than in the image. A kernel larger than
//!   the padded input is allowed as upstream allows it (CEIL may still give one clipped
//!   window) unless no window remains.
//! * MAX: the maximum of the window clipped to the image; the argmax (index `h * width + w` in
//!   its plane) goes to a second top if there is one, as upstream's `top_mask`, else to an
//!   internal buffer. Backward routes each gradient to its argmax.
//! * AVE: the sum over the window clipped to the image, divided by the size of the window
//!   clipped to the *padded* image (padding counts as zeros).
//! * STOCHASTIC is refused: upstream implements it only on the GPU (its CPU path is
//!   `NOT_IMPLEMENTED`).

use crate::backend::{Backend, PoolGeom, Pooling, Views};
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::pooling_parameter::{PoolMethod, RoundMode};
use crate::proto::caffe::LayerParameter;

/// The Pooling layer.
pub struct PoolingLayer<B: Backend> {
    method: PoolMethod,
    global: bool,
    round: RoundMode,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    geom: Option<PoolGeom>,
    /// The argmax of MAX pooling when there is no mask top.
    mask: Option<B::Buffer>,
}

fn invalid(message: impl std::fmt::Display) -> LayerError {
    LayerError::invalid(format!("pooling_param{message}"))
}

/// Pooled size along one axis with upstream's rounding and clipping rule
/// (src/caffe/layers/pooling_layer.cpp, `Reshape`), or `None` if no window is left. `clip` is
/// whether the layer has any padding: upstream then clips both axes, even one without padding.
pub(crate) fn pooled_size(
    size: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    round: RoundMode,
    clip: bool,
) -> Option<usize> {
    // Upstream rounds a float quotient that may be negative (kernel larger than the padded
    // input); integer ceil/floor division gives the same values.
    let span = (size + 2 * pad) as i64 - kernel as i64;
    let s = stride as i64;
    let q = match round {
        RoundMode::Ceil => span.div_euclid(s) + i64::from(span.rem_euclid(s) != 0),
        RoundMode::Floor => span.div_euclid(s),
    };
    let mut pooled = q + 1;
    if clip && (pooled - 1) * s >= (size + pad) as i64 {
        pooled -= 1;
    }
    (pooled >= 1).then_some(pooled as usize)
}

impl<B: Backend> PoolingLayer<B> {
    /// Reads and checks `pooling_param` with upstream's rules.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.pooling_param.unwrap_or_default();
        let method = PoolMethod::try_from(p.pool.unwrap_or(0))
            .map_err(|_| invalid(format!(".pool: unknown pooling method {:?}", p.pool)))?;
        let round = RoundMode::try_from(p.round_mode.unwrap_or(0)).map_err(|_| {
            invalid(format!(
                ".round_mode: unknown rounding mode {:?}",
                p.round_mode
            ))
        })?;
        if method == PoolMethod::Stochastic {
            return Err(invalid(
                ".pool: STOCHASTIC pooling is not implemented (upstream implements it only on \
                 the GPU); use MAX or AVE",
            ));
        }
        let global = p.global_pooling();
        let has_hw = p.kernel_h.is_some() && p.kernel_w.is_some();
        let kernel = if global {
            if p.kernel_size.is_some() || p.kernel_h.is_some() || p.kernel_w.is_some() {
                return Err(invalid(
                    ": with global_pooling: true, kernel_size/kernel_h/kernel_w cannot be \
                     specified",
                ));
            }
            (0, 0)
        } else {
            if p.kernel_size.is_some() && has_hw {
                return Err(invalid(
                    ": filter size is kernel_size OR kernel_h and kernel_w; not both",
                ));
            }
            let kernel = match p.kernel_size {
                Some(k) => (k as usize, k as usize),
                None if has_hw => (p.kernel_h() as usize, p.kernel_w() as usize),
                None => {
                    return Err(invalid(
                        ".kernel_size: missing (for non-square filters both kernel_h and \
                         kernel_w are required)",
                    ))
                }
            };
            if kernel.0 == 0 || kernel.1 == 0 {
                return Err(invalid(format!(
                    ".kernel_size: filter dimensions cannot be zero ({}x{})",
                    kernel.0, kernel.1
                )));
            }
            kernel
        };
        let pair =
            |name: &str, one: Option<u32>, h: Option<u32>, w: Option<u32>, default: u32| match (
                one, h, w,
            ) {
                (None, Some(h), Some(w)) => Ok((h as usize, w as usize)),
                (one, None, None) => {
                    let v = one.unwrap_or(default) as usize;
                    Ok((v, v))
                }
                _ => Err(invalid(format!(
                    ".{name}: {name} is {name} OR {name}_h and {name}_w are required"
                ))),
            };
        let pad = pair("pad", p.pad, p.pad_h, p.pad_w, 0)?;
        let stride = pair("stride", p.stride, p.stride_h, p.stride_w, 1)?;
        if stride.0 == 0 || stride.1 == 0 {
            return Err(invalid(format!(
                ".stride: must be positive ({}x{})",
                stride.0, stride.1
            )));
        }
        if global {
            if pad != (0, 0) || stride != (1, 1) {
                return Err(invalid(
                    ": with global_pooling: true, only pad = 0 and stride = 1 are allowed",
                ));
            }
        } else if pad.0 >= kernel.0 || pad.1 >= kernel.1 {
            return Err(invalid(format!(
                ".pad: pad ({}x{}) must be smaller than the kernel ({}x{})",
                pad.0, pad.1, kernel.0, kernel.1
            )));
        }
        Ok(PoolingLayer {
            method,
            global,
            round,
            kernel,
            stride,
            pad,
            geom: None,
            mask: None,
        })
    }

    fn geom(&self) -> Result<&PoolGeom, LayerError> {
        self.geom
            .as_ref()
            .ok_or_else(|| LayerError::invalid("Pooling: forward before reshape"))
    }
}

impl<B: Backend> Layer<B> for PoolingLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Pooling"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(
            Count::Exactly(1),
            Count::Range(1, if self.method == PoolMethod::Max { 2 } else { 1 }),
        )
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottom, mut tops) = blobs.forward_all()?;
        let bottom = bottom[0];
        let &[num, channels, height, width] = bottom.shape() else {
            return Err(LayerError::invalid(format!(
                "Pooling: input must have 4 axes (num, channels, height, width), got shape {}",
                bottom.shape_string()
            )));
        };
        let (kernel, stride, pad) = if self.global {
            ((height, width), (1, 1), (0, 0))
        } else {
            (self.kernel, self.stride, self.pad)
        };
        if kernel.0 == 0 || kernel.1 == 0 {
            return Err(LayerError::invalid(format!(
                "pooling_param.global_pooling: the input plane is empty (shape {})",
                bottom.shape_string()
            )));
        }
        let clip = pad != (0, 0);
        let pooled = |size, k, s, p| {
            pooled_size(size, k, s, p, self.round, clip).ok_or_else(|| {
                invalid(format!(
                    ".kernel_size: kernel {k} larger than padded input {} leaves no output \
                     (bottom shape {}, stride {s}, round_mode {:?})",
                    size + 2 * p,
                    bottom.shape_string(),
                    self.round
                ))
            })
        };
        let pooled_h = pooled(height, kernel.0, stride.0, pad.0)?;
        let pooled_w = pooled(width, kernel.1, stride.1, pad.1)?;
        let geom = PoolGeom {
            planes: num * channels,
            height,
            width,
            kernel_h: kernel.0,
            kernel_w: kernel.1,
            stride_h: stride.0,
            stride_w: stride.1,
            pad_h: pad.0,
            pad_w: pad.1,
            pooled_h,
            pooled_w,
        };
        let top_shape = [num, channels, pooled_h, pooled_w];
        for top in tops.iter_mut() {
            top.reshape(&top_shape)?;
        }
        if self.method == PoolMethod::Max && tops.len() == 1 {
            use crate::backend::DeviceBuffer;
            let len = geom.out_len();
            if self.mask.as_ref().is_none_or(|m| m.len() < len) {
                self.mask = Some(ctx.backend.alloc(len)?);
            }
        }
        self.geom = Some(geom);
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let g = *self.geom()?;
        let be = ctx.backend;
        let (bottom, mut tops) = blobs.forward_all()?;
        let x = bottom[0].data_view();
        match self.method {
            PoolMethod::Max => {
                let (y, mask) = if let [top, mask_top] = tops.as_mut_slice() {
                    (top.data_view_mut(), mask_top.data_view_mut())
                } else {
                    let mask = self.mask.as_mut().expect("mask allocated in reshape");
                    (tops[0].data_view_mut(), mask.slice_mut(0, g.out_len()))
                };
                be.pool_forward(&g, Pooling::Max { mask }, x, y)?;
            }
            PoolMethod::Ave => be.pool_forward(&g, Pooling::Ave, x, tops[0].data_view_mut())?,
            PoolMethod::Stochastic => unreachable!("refused in new"),
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
        let g = *self.geom()?;
        let be = ctx.backend;
        let (tops, mut bottom) = blobs.backward_all()?;
        let pooling = match self.method {
            PoolMethod::Max => Pooling::Max {
                mask: match tops.get(1) {
                    Some(mask_top) => mask_top.data_view(),
                    None => {
                        let mask = self.mask.as_ref().expect("mask allocated in reshape");
                        mask.slice(0, g.out_len())
                    }
                },
            },
            PoolMethod::Ave => Pooling::Ave,
            PoolMethod::Stochastic => unreachable!("refused in new"),
        };
        be.pool_backward(&g, pooling, tops[0].diff_view(), bottom[0].diff_view_mut())?;
        Ok(())
    }
}
