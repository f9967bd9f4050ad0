//! SPP: spatial pyramid pooling, a fixed-length vector from an image of any size
//! (upstream: src/caffe/layers/spp_layer.cpp).
//!
//! `spp_param { pyramid_height pool: MAX }`. Level `l` (0 to `pyramid_height - 1`) pools the
//! `(N, C, H, W)` bottom into about `2^l x 2^l` bins with upstream's window: kernel
//! `ceil(H / 2^l)`, stride equal to the kernel, pad `(kernel 2^l - H + 1) / 2` (likewise for
//! W), and Pooling's CEIL output rule. Upstream wires a Split, one Pooling and Flatten per
//! level and a Concat; here each level pools into its own buffer and is copied into the top at
//! its offset, which gives the same layout: `(N, sum_l C PH_l PW_l)`, level 0 first, each
//! level's block in `(c, ph, pw)` order. With `pyramid_height: 1` the top is the single
//! pooling's `(N, C, PH, PW)`, unflattened, as upstream. Backward pools each level's slice of
//! the top diff back and sums the levels (the Split's backward). STOCHASTIC is refused, as
//! Pooling refuses it.

use crate::backend::{Backend, Block, PoolGeom, Pooling, Scalar, Views};
use crate::layers::loss::scratch;
use crate::layers::pooling::pooled_size;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::pooling_parameter::RoundMode;
use crate::proto::caffe::spp_parameter::PoolMethod;
use crate::proto::caffe::LayerParameter;

/// One pyramid level: its pooling geometry and buffers.
struct Level<B: Backend> {
    geom: PoolGeom,
    /// The pooled output (forward) or its gradient (backward).
    pooled: Option<B::Buffer>,
    /// MAX pooling's argmax.
    mask: Option<B::Buffer>,
}

/// The SPP layer.
pub struct SppLayer<B: Backend> {
    pyramid_height: u32,
    max: bool,
    levels: Vec<Level<B>>,
    /// Images in the bottom.
    num: usize,
    /// One level's bottom gradient, before it is added to the others.
    level_grad: Option<B::Buffer>,
}

/// Upstream's window for `2^level` bins over `size` pixels: `(kernel, stride, pad)`.
pub fn level_window(level: u32, size: usize) -> (usize, usize, usize) {
    let bins = 1usize << level;
    let kernel = size.div_ceil(bins);
    let remainder = kernel * bins - size;
    (kernel, kernel, remainder.div_ceil(2))
}

impl<B: Backend> SppLayer<B> {
    /// Reads `spp_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.spp_param.unwrap_or_default();
        let pyramid_height = p.pyramid_height();
        if !(1..=31).contains(&pyramid_height) {
            return Err(LayerError::invalid(format!(
                "spp_param.pyramid_height must be from 1 to 31, got {pyramid_height}"
            )));
        }
        let max = match PoolMethod::try_from(p.pool.unwrap_or(0)) {
            Ok(PoolMethod::Max) => true,
            Ok(PoolMethod::Ave) => false,
            Ok(PoolMethod::Stochastic) => {
                return Err(LayerError::invalid(
                    "spp_param.pool: STOCHASTIC pooling is not implemented (upstream runs it \
                     only on the GPU)",
                ))
            }
            Err(_) => {
                return Err(LayerError::invalid(format!(
                    "spp_param.pool: unknown pooling method {:?}",
                    p.pool
                )))
            }
        };
        Ok(SppLayer {
            pyramid_height,
            max,
            levels: Vec::new(),
            num: 0,
            level_grad: None,
        })
    }

    /// The pooling geometry of `level` over `planes` planes of `height x width`.
    fn level_geom(
        level: u32,
        planes: usize,
        (height, width): (usize, usize),
    ) -> Result<PoolGeom, LayerError> {
        let (kernel_h, stride_h, pad_h) = level_window(level, height);
        let (kernel_w, stride_w, pad_w) = level_window(level, width);
        if pad_h >= kernel_h || pad_w >= kernel_w {
            return Err(LayerError::invalid(format!(
                "spp_param.pyramid_height: level {level} pools {height}x{width} with kernel \
                 {kernel_h}x{kernel_w} and pad {pad_h}x{pad_w}, but the pad must be smaller \
                 than the kernel (the image is too small for {} bins)",
                1u64 << level
            )));
        }
        let clip = pad_h > 0 || pad_w > 0;
        let pooled = |size, kernel, stride, pad| {
            pooled_size(size, kernel, stride, pad, RoundMode::Ceil, clip).ok_or_else(|| {
                LayerError::invalid(format!(
                    "spp_param.pyramid_height: level {level} leaves no pooling window over \
                     {height}x{width}"
                ))
            })
        };
        Ok(PoolGeom {
            planes,
            height,
            width,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
            pooled_h: pooled(height, kernel_h, stride_h, pad_h)?,
            pooled_w: pooled(width, kernel_w, stride_w, pad_w)?,
        })
    }

    /// Elements of one image's block of the top at `level`: `C PH PW`.
    fn level_row(&self, level: &Level<B>) -> usize {
        level.geom.out_len() / self.num
    }
}

impl<B: Backend> Layer<B> for SppLayer<B> {
    fn layer_type(&self) -> &'static str {
        "SPP"
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
        let bottom = blobs.bottom(0);
        let &[num, channels, height, width] = bottom.shape() else {
            return Err(LayerError::invalid(format!(
                "SPP: input must have 4 axes (num, channels, height, width), got bottom shape {}",
                bottom.shape_string()
            )));
        };
        if num == 0 || channels == 0 || height == 0 || width == 0 {
            return Err(LayerError::invalid(format!(
                "SPP: input dimensions cannot be zero, got bottom shape {}",
                bottom.shape_string()
            )));
        }
        self.num = num;
        let planes = num * channels;
        let mut levels = Vec::with_capacity(self.pyramid_height as usize);
        let mut old = std::mem::take(&mut self.levels).into_iter();
        for l in 0..self.pyramid_height {
            let geom = Self::level_geom(l, planes, (height, width))?;
            let (mut pooled, mut mask) = old.next().map_or((None, None), |o| (o.pooled, o.mask));
            if self.pyramid_height > 1 {
                scratch(ctx.backend, &mut pooled, geom.out_len())?;
            }
            if self.max {
                scratch(ctx.backend, &mut mask, geom.out_len())?;
            }
            levels.push(Level { geom, pooled, mask });
        }
        self.levels = levels;
        let top_shape = if self.pyramid_height == 1 {
            let g = &self.levels[0].geom;
            vec![num, channels, g.pooled_h, g.pooled_w]
        } else {
            let row: usize = self.levels.iter().map(|l| self.level_row(l)).sum();
            vec![num, row]
        };
        if self.pyramid_height > 1 {
            let in_len = num * channels * height * width;
            scratch(ctx.backend, &mut self.level_grad, in_len)?;
        }
        blobs.top_mut(0).reshape(&top_shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let (bottoms, mut tops) = blobs.forward_all()?;
        let x = bottoms[0].data_view();
        let top_row = tops[0].count() / self.num;
        let single = self.pyramid_height == 1;
        let mut offset = 0;
        for level in &mut self.levels {
            let geom = level.geom;
            let len = geom.out_len();
            let row = len / self.num;
            let mask = level.mask.as_mut().map(|m| m.slice_mut(0, len));
            let pooling = match mask {
                Some(mask) if self.max => Pooling::Max { mask },
                _ => Pooling::Ave,
            };
            if single {
                be.pool_forward(&geom, pooling, x, tops[0].data_view_mut())?;
                break;
            }
            let pooled = scratch(be, &mut level.pooled, len)?;
            be.pool_forward(&geom, pooling, x, pooled.slice_mut(0, len))?;
            // Concat of the flattened levels along axis 1.
            let block = Block {
                rows: self.num,
                cols: row,
                x_stride: row,
                y_stride: top_row,
            };
            be.copy_2d(
                &block,
                pooled.slice(0, len),
                tops[0].data_mut().tail_mut(offset),
            )?;
            offset += row;
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
        let be = ctx.backend;
        let (tops, mut bottoms) = blobs.backward_all()?;
        let dy = tops[0].diff_view();
        let mut dx = bottoms[0].diff_view_mut();
        let top_row = tops[0].count() / self.num;
        let in_len = dx.len;
        let single = self.pyramid_height == 1;
        let mut offset = 0;
        for (l, level) in self.levels.iter_mut().enumerate() {
            let geom = level.geom;
            let len = geom.out_len();
            let row = len / self.num;
            let mask = level.mask.as_ref().map(|m| m.slice(0, len));
            let pooling = match mask {
                Some(mask) if self.max => Pooling::Max { mask },
                _ => Pooling::Ave,
            };
            if single {
                be.pool_backward(&geom, pooling, dy, dx.reborrow())?;
                break;
            }
            // This level's block of the top diff, unflattened.
            let pooled = scratch(be, &mut level.pooled, len)?;
            let block = Block {
                rows: self.num,
                cols: row,
                x_stride: top_row,
                y_stride: row,
            };
            be.copy_2d(
                &block,
                dy.part(offset, dy.len - offset),
                pooled.slice_mut(0, len),
            )?;
            offset += row;
            // The Split's backward: the first level's gradient, plus each later one.
            if l == 0 {
                be.pool_backward(&geom, pooling, pooled.slice(0, len), dx.reborrow())?;
            } else {
                let grad = scratch(be, &mut self.level_grad, in_len)?;
                be.pool_backward(
                    &geom,
                    pooling,
                    pooled.slice(0, len),
                    grad.slice_mut(0, in_len),
                )?;
                be.axpby(
                    Scalar::Value(1.0),
                    grad.slice(0, in_len),
                    1.0,
                    dx.reborrow(),
                )?;
            }
        }
        Ok(())
    }
}
