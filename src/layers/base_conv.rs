//! What Convolution and Deconvolution share (upstream: src/caffe/layers/base_conv_layer.cpp):
//! reading `convolution_param`, creating the weights, shaping the tops and the column buffer,
//! and the per-image GEMMs.
//!
//! Both layers are written in terms of one "convolution" from `conv_in_channels` to
//! `conv_out_channels`. Convolution runs it forwards (bottom = its input); Deconvolution runs it
//! backwards (top = its input, the geometry is the top's), exactly as upstream's
//! `reverse_dimensions`. Over the whole batch, through the backend's batch ops (which the CPU
//! backend spreads over its workers image by image):
//!
//! * [`ConvBase::conv_forward`]: `out = W col(in)` per image, one GEMM per group, plus the bias;
//! * [`ConvBase::conv_backward`]: `dW += out col(in)^T` summed over the images, and
//!   `in = col2im(W^T out)` per image.
//!
//! A 1x1 kernel with stride 1 and no padding makes im2col the identity: the image itself is the
//! column matrix and no buffer is used (upstream's `is_1x1_`, [`ConvBatch::is_1x1`]).
//!
//! Spatial axes: 2 (the usual NCHW) and 1 (run as a 2-D convolution of height 1, which gives
//! the same numbers). Upstream's N-D im2col for 3 or more spatial axes is not implemented and
//! is refused in setup; `force_nd_im2col` is accepted for 1 or 2 axes, where upstream's N-D path
//! computes the same values as the 2-D one.

use crate::backend::{
    Axis, Backend, Binary, Broadcast, ConvBatch, ConvGeom, ConvGrads, Slice, SliceMut, Src, Views,
};
use crate::blob::Blob;
use crate::filler::Filler;
use crate::layers::{Blobs, Context, LayerError};
use crate::proto::caffe::{ConvolutionParameter, FillerParameter, LayerParameter};

/// `convolution_param` as read and checked before the bottoms are known.
#[derive(Debug, Clone)]
struct ConvSpec {
    num_output: usize,
    bias_term: bool,
    group: usize,
    axis: i32,
    weight_filler: FillerParameter,
    bias_filler: FillerParameter,
    param: ConvolutionParameter,
}

/// The shared state of a Convolution or Deconvolution layer.
pub struct ConvBase<B: Backend> {
    /// "Convolution" or "Deconvolution", for messages.
    layer_type: &'static str,
    /// True for Deconvolution (upstream's `reverse_dimensions`).
    reverse: bool,
    spec: ConvSpec,
    // Set in setup.
    channel_axis: usize,
    num_spatial: usize,
    kernel: Vec<usize>,
    stride: Vec<usize>,
    pad: Vec<usize>,
    dilation: Vec<usize>,
    channels: usize,
    conv_in_channels: usize,
    conv_out_channels: usize,
    kernel_dim: usize,
    // Set in reshape.
    /// Images in a bottom: `count(0, channel_axis)`.
    num: usize,
    bottom_dim: usize,
    top_dim: usize,
    out_spatial: usize,
    conv_out_spatial: usize,
    geom: ConvGeom,
    /// The batch convolution ops' workspace ([`ConvBatch::workspace_len`]: upstream's
    /// column buffer, or nothing on a backend with its own scratch); allocated in reshape,
    /// grown only when a larger one is needed.
    workspace: Option<B::Buffer>,
}

fn field(name: &str) -> String {
    format!("convolution_param.{name}")
}

/// A repeated spatial field (`pad`, `kernel_size`, `stride`, `dilation`) or its `_h`/`_w` form
/// resolved to one value per spatial axis, as upstream's `LayerSetUp`.
fn per_axis(
    name: &str,
    repeated: &[u32],
    hw: Option<(&str, Option<u32>, Option<u32>)>,
    num_spatial: usize,
    default: Option<usize>,
) -> Result<Vec<usize>, LayerError> {
    if let Some((short, h, w)) = hw {
        if h.is_some() || w.is_some() {
            if num_spatial != 2 {
                return Err(LayerError::invalid(format!(
                    "{}: {short}_h and {short}_w can only be used for 2-D convolution \
                     ({num_spatial} spatial axes)",
                    field(name)
                )));
            }
            if !repeated.is_empty() {
                return Err(LayerError::invalid(format!(
                    "{}: either {name} or {short}_h/{short}_w should be specified; not both",
                    field(name)
                )));
            }
            // An unset half is 0, as upstream's proto getters give (caught below for kernel
            // and stride).
            return Ok(vec![h.unwrap_or(0) as usize, w.unwrap_or(0) as usize]);
        }
    }
    match (repeated.len(), default) {
        (0, Some(d)) => Ok(vec![d; num_spatial]),
        (1, _) => Ok(vec![repeated[0] as usize; num_spatial]),
        (n, _) if n == num_spatial => Ok(repeated.iter().map(|&v| v as usize).collect()),
        (n, _) => Err(LayerError::invalid(format!(
            "{}: must be specified once, or once per spatial dimension ({n} given; \
             {num_spatial} spatial dims)",
            field(name)
        ))),
    }
}

/// The sliding window `convolution_param` describes: kernel, stride, pad and dilation, one
/// value per spatial axis (also read by Im2col, as upstream's `Im2colLayer` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub pad: Vec<usize>,
    pub dilation: Vec<usize>,
}

impl Window {
    /// Resolves `p`'s repeated and `_h`/`_w` fields for `num_spatial` axes, with upstream's
    /// defaults (stride 1, pad 0, dilation 1) and checks (kernel, stride and dilation nonzero).
    pub fn read(p: &ConvolutionParameter, num_spatial: usize) -> Result<Self, LayerError> {
        let kernel = per_axis(
            "kernel_size",
            &p.kernel_size,
            Some(("kernel", p.kernel_h, p.kernel_w)),
            num_spatial,
            None,
        )?;
        if kernel.contains(&0) {
            return Err(LayerError::invalid(format!(
                "{}: filter dimensions must be nonzero, got {:?}",
                field("kernel_size"),
                kernel
            )));
        }
        let stride = per_axis(
            "stride",
            &p.stride,
            Some(("stride", p.stride_h, p.stride_w)),
            num_spatial,
            Some(1),
        )?;
        if stride.contains(&0) {
            return Err(LayerError::invalid(format!(
                "{}: stride dimensions must be nonzero, got {:?}",
                field("stride"),
                stride
            )));
        }
        let pad = per_axis(
            "pad",
            &p.pad,
            Some(("pad", p.pad_h, p.pad_w)),
            num_spatial,
            Some(0),
        )?;
        let dilation = per_axis("dilation", &p.dilation, None, num_spatial, Some(1))?;
        if dilation.contains(&0) {
            return Err(LayerError::invalid(format!(
                "{}: dilation must be positive, got {:?}",
                field("dilation"),
                dilation
            )));
        }
        Ok(Window {
            kernel,
            stride,
            pad,
            dilation,
        })
    }
}

fn grow<B: Backend>(
    backend: &B,
    buf: &mut Option<B::Buffer>,
    len: usize,
) -> Result<(), LayerError> {
    use crate::backend::DeviceBuffer;
    if buf.as_ref().is_none_or(|b| b.len() < len) {
        *buf = Some(backend.alloc(len)?);
    }
    Ok(())
}

impl<B: Backend> ConvBase<B> {
    /// Reads and checks `convolution_param` (the checks that need no bottom).
    pub fn new(
        param: &LayerParameter,
        layer_type: &'static str,
        reverse: bool,
    ) -> Result<Self, LayerError> {
        let p = param.convolution_param.clone().unwrap_or_default();
        let num_output = p.num_output() as usize;
        if num_output == 0 {
            return Err(LayerError::invalid(format!(
                "{} must be positive",
                field("num_output")
            )));
        }
        let group = p.group() as usize;
        if group == 0 {
            return Err(LayerError::invalid(format!(
                "{} must be positive",
                field("group")
            )));
        }
        if !num_output.is_multiple_of(group) {
            return Err(LayerError::invalid(format!(
                "{}: num_output {num_output} is not a multiple of group {group}",
                field("group")
            )));
        }
        let weight_filler = p.weight_filler.clone().unwrap_or_default();
        let bias_filler = p.bias_filler.clone().unwrap_or_default();
        let filler_err = |name: &str, e| LayerError::invalid(format!("{}: {e}", field(name)));
        Filler::from_param(&weight_filler).map_err(|e| filler_err("weight_filler", e))?;
        if p.bias_term() {
            Filler::from_param(&bias_filler).map_err(|e| filler_err("bias_filler", e))?;
        }
        let geom = ConvGeom {
            channels: 0,
            height: 0,
            width: 0,
            kernel_h: 1,
            kernel_w: 1,
            pad_h: 0,
            pad_w: 0,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
        };
        Ok(ConvBase {
            layer_type,
            reverse,
            spec: ConvSpec {
                num_output,
                bias_term: p.bias_term(),
                group,
                axis: p.axis(),
                weight_filler,
                bias_filler,
                param: p,
            },
            channel_axis: 0,
            num_spatial: 0,
            kernel: Vec::new(),
            stride: Vec::new(),
            pad: Vec::new(),
            dilation: Vec::new(),
            channels: 0,
            conv_in_channels: 0,
            conv_out_channels: 0,
            kernel_dim: 0,
            num: 0,
            bottom_dim: 0,
            top_dim: 0,
            out_spatial: 0,
            conv_out_spatial: 0,
            geom,
            workspace: None,
        })
    }

    /// Whether the layer has a bias blob (parameter 1).
    pub fn bias_term(&self) -> bool {
        self.spec.bias_term
    }

    /// Images per bottom blob.
    pub fn num(&self) -> usize {
        self.num
    }
    /// Elements of one bottom image.
    pub fn bottom_dim(&self) -> usize {
        self.bottom_dim
    }
    /// Elements of one top image.
    pub fn top_dim(&self) -> usize {
        self.top_dim
    }

    /// Upstream's `LayerSetUp`: resolves the spatial parameters against bottom 0 and creates
    /// the weights `(conv_out, conv_in / group, kernel...)` and the bias `(num_output)`.
    pub fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let p = &self.spec.param;
        self.channel_axis = bottom
            .canonical_axis_index(self.spec.axis as isize)
            .map_err(|e| LayerError::invalid(format!("{}: {e}", field("axis"))))?;
        self.num_spatial = bottom.num_axes() - self.channel_axis - 1;
        if !(1..=2).contains(&self.num_spatial) {
            return Err(LayerError::invalid(format!(
                "{}: {} spatial axes after channel axis {} of bottom shape {}: only 1-D and 2-D \
                 {} is implemented (upstream's N-D im2col is not)",
                field("axis"),
                self.num_spatial,
                self.channel_axis,
                bottom.shape_string(),
                self.layer_type
            )));
        }
        let window = Window::read(p, self.num_spatial)?;
        (self.kernel, self.stride, self.pad, self.dilation) =
            (window.kernel, window.stride, window.pad, window.dilation);

        self.channels = bottom.shape()[self.channel_axis];
        let (group, num_output) = (self.spec.group, self.spec.num_output);
        if !self.channels.is_multiple_of(group) {
            return Err(LayerError::invalid(format!(
                "{}: group {group} does not divide the {} input channels of bottom shape {}",
                field("group"),
                self.channels,
                bottom.shape_string()
            )));
        }
        (self.conv_in_channels, self.conv_out_channels) = if self.reverse {
            (num_output, self.channels)
        } else {
            (self.channels, num_output)
        };
        let mut weight_shape = vec![self.conv_out_channels, self.conv_in_channels / group];
        weight_shape.extend_from_slice(&self.kernel);
        self.kernel_dim = weight_shape[1..].iter().product();

        let backend = ctx.backend;
        let mut weight = Blob::new(backend, &weight_shape)?;
        Filler::from_param(&self.spec.weight_filler)?.fill(&mut weight, ctx.rng)?;
        params.push(weight);
        if self.spec.bias_term {
            let mut bias = Blob::new(backend, &[num_output])?;
            Filler::from_param(&self.spec.bias_filler)?.fill(&mut bias, ctx.rng)?;
            params.push(bias);
        }
        Ok(())
    }

    /// Checks the weights' shapes (they may have been loaded or shared).
    fn check_params(&self, weight: &Blob<B>, bias: Option<&Blob<B>>) -> Result<(), LayerError> {
        let mut want = vec![
            self.conv_out_channels,
            self.conv_in_channels / self.spec.group,
        ];
        want.extend_from_slice(&self.kernel);
        if weight.shape() != want.as_slice() {
            return Err(LayerError::invalid(format!(
                "{}: incorrect weight shape: expected {:?}, found {}",
                self.layer_type,
                want,
                weight.shape_string()
            )));
        }
        if let Some(bias) = bias {
            if bias.shape() != [self.spec.num_output] {
                return Err(LayerError::invalid(format!(
                    "{}: incorrect bias shape: expected [{}], found {}",
                    self.layer_type,
                    self.spec.num_output,
                    bias.shape_string()
                )));
            }
        }
        Ok(())
    }

    /// Upstream's `Reshape`: checks the bottoms, shapes every top, sizes the column buffer.
    pub fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &crate::layers::Params<'_, B>,
    ) -> Result<(), LayerError> {
        self.check_params(
            params.get(0),
            if self.spec.bias_term {
                Some(params.get(1))
            } else {
                None
            },
        )?;
        let (bottoms, mut tops) = blobs.forward_all()?;
        let b0 = bottoms[0];
        let first_spatial = self.channel_axis + 1;
        if b0.num_axes() != first_spatial + self.num_spatial {
            return Err(LayerError::invalid(format!(
                "{}: bottom num_axes may not change: bottom 0 has shape {}, set up with {} axes",
                self.layer_type,
                b0.shape_string(),
                first_spatial + self.num_spatial
            )));
        }
        if b0.shape()[self.channel_axis] != self.channels {
            return Err(LayerError::invalid(format!(
                "{}: input size incompatible with convolution kernel: bottom 0 has shape {} \
                 with {} channels, set up for {}",
                self.layer_type,
                b0.shape_string(),
                b0.shape()[self.channel_axis],
                self.channels
            )));
        }
        for (i, b) in bottoms.iter().enumerate().skip(1) {
            if b.shape() != b0.shape() {
                return Err(LayerError::invalid(format!(
                    "{}: shape mismatch - bottom 0: {} vs. bottom {i}: {}",
                    self.layer_type,
                    b0.shape_string(),
                    b.shape_string()
                )));
            }
        }
        let in_spatial = &b0.shape()[first_spatial..];
        let mut out_spatial = Vec::with_capacity(self.num_spatial);
        for (i, &size) in in_spatial.iter().enumerate() {
            out_spatial.push(self.output_dim(i, size, b0)?);
        }
        let mut top_shape = b0.shape()[..self.channel_axis].to_vec();
        top_shape.push(self.spec.num_output);
        top_shape.extend_from_slice(&out_spatial);
        for top in tops.iter_mut() {
            top.reshape(&top_shape)?;
        }
        self.num = b0.shape()[..self.channel_axis].iter().product();
        self.bottom_dim = b0.count_from(self.channel_axis)?;
        self.top_dim = tops[0].count_from(self.channel_axis)?;
        self.out_spatial = out_spatial.iter().product();
        let in_count: usize = in_spatial.iter().product();
        self.conv_out_spatial = if self.reverse {
            in_count
        } else {
            self.out_spatial
        };
        // The convolution's input image: the bottom's, or for Deconvolution the top's.
        let im_spatial: &[usize] = if self.reverse {
            &out_spatial
        } else {
            in_spatial
        };
        // 1-D runs as 2-D with a height of 1.
        let two = |v: &[usize], fill: usize| {
            if self.num_spatial == 1 {
                (fill, v[0])
            } else {
                (v[0], v[1])
            }
        };
        let (height, width) = two(im_spatial, 1);
        let (kernel_h, kernel_w) = two(&self.kernel, 1);
        let (pad_h, pad_w) = two(&self.pad, 0);
        let (stride_h, stride_w) = two(&self.stride, 1);
        let (dilation_h, dilation_w) = two(&self.dilation, 1);
        self.geom = ConvGeom {
            channels: self.conv_in_channels,
            height,
            width,
            kernel_h,
            kernel_w,
            pad_h,
            pad_w,
            stride_h,
            stride_w,
            dilation_h,
            dilation_w,
        };
        debug_assert_eq!(self.geom.out_h() * self.geom.out_w(), self.conv_out_spatial);
        let len = self.batch().workspace_len(ctx.backend.capabilities());
        grow(ctx.backend, &mut self.workspace, len)?;
        Ok(())
    }

    /// Output size along spatial axis `i` for an input of `size`: upstream's
    /// `compute_output_shape` of conv_layer.cpp / deconv_layer.cpp.
    fn output_dim(&self, i: usize, size: usize, bottom: &Blob<B>) -> Result<usize, LayerError> {
        let (k, s, p, d) = (
            self.kernel[i],
            self.stride[i],
            self.pad[i],
            self.dilation[i],
        );
        let extent = d * (k - 1) + 1;
        let dilated = if d > 1 {
            format!(" (dilated {k} by {d})")
        } else {
            String::new()
        };
        if self.reverse {
            // stride (size - 1) + extent - 2 pad
            let out = (s * size.saturating_sub(1) + extent) as i64 - 2 * p as i64;
            if size == 0 || out <= 0 {
                return Err(LayerError::invalid(format!(
                    "{}: pad {p} leaves no output along spatial axis {i} of bottom shape {} \
                     (kernel {extent}{dilated}, stride {s})",
                    field("pad"),
                    bottom.shape_string()
                )));
            }
            Ok(out as usize)
        } else {
            let padded = size + 2 * p;
            if padded < extent {
                return Err(LayerError::invalid(format!(
                    "{}: kernel {extent}{dilated} larger than padded input {padded} along \
                     spatial axis {i} of bottom shape {}",
                    field("kernel_size"),
                    bottom.shape_string()
                )));
            }
            Ok((padded - extent) / s + 1)
        }
    }

    /// This layer's convolution over the whole batch (for Deconvolution: the convolution it runs
    /// backwards, whose input is the top).
    fn batch(&self) -> ConvBatch {
        ConvBatch {
            geom: self.geom,
            num: self.num,
            groups: self.spec.group,
            out_channels: self.conv_out_channels,
        }
    }

    /// The batch convolution ops' workspace.
    fn workspace(&mut self) -> SliceMut<'_, B::Buffer> {
        let workspace = self.workspace.as_mut();
        workspace
            .expect("workspace allocated in reshape")
            .whole_mut()
    }

    /// A top as the bias sees it: `num x num_output x out_spatial`.
    fn bias_axis(&self) -> Axis {
        Axis::new(self.num, self.spec.num_output, self.out_spatial)
    }

    /// `output[n] = W col(input[n])` per group for every image, plus the bias when given
    /// (upstream's `forward_cpu_gemm` then `forward_cpu_bias`).
    pub fn conv_forward(
        &mut self,
        backend: &B,
        input: Slice<'_, B::Buffer>,
        weights: Slice<'_, B::Buffer>,
        bias: Option<Slice<'_, B::Buffer>>,
        output: SliceMut<'_, B::Buffer>,
    ) -> Result<(), LayerError> {
        let batch = self.batch();
        backend.conv_forward(&batch, input, weights, bias, output, self.workspace())?;
        Ok(())
    }

    /// The convolution's gradients from `output_diff`: `grads.dw += sum_n output_diff[n]
    /// col(input[n])^T` when given (`input` is read only then), and `grads.dx[n] =
    /// col2im(W^T output_diff[n])` when given (upstream's `weight_cpu_gemm` and
    /// `backward_cpu_gemm`). For Deconvolution the second is its forward pass.
    pub fn conv_backward(
        &mut self,
        backend: &B,
        input: Slice<'_, B::Buffer>,
        weights: Slice<'_, B::Buffer>,
        output_diff: Slice<'_, B::Buffer>,
        grads: ConvGrads<'_, B::Buffer>,
    ) -> Result<(), LayerError> {
        let batch = self.batch();
        backend.conv_backward(&batch, input, weights, output_diff, grads, self.workspace())?;
        Ok(())
    }

    /// Adds the bias to every image of a top: `top[n, c, s] += bias[c]`.
    pub fn forward_bias(
        &self,
        backend: &B,
        bias: Slice<'_, B::Buffer>,
        top: SliceMut<'_, B::Buffer>,
    ) -> Result<(), LayerError> {
        let axis = self.bias_axis();
        backend.broadcast(
            Binary::Add,
            Broadcast::PerChannel,
            axis,
            bias,
            Src::InPlace,
            top,
        )?;
        Ok(())
    }

    /// Accumulates the bias gradient of a top: `bias_diff[c] += sum_{n, s} top_diff[n, c, s]`.
    pub fn backward_bias(
        &self,
        backend: &B,
        top_diff: Slice<'_, B::Buffer>,
        bias_diff: SliceMut<'_, B::Buffer>,
    ) -> Result<(), LayerError> {
        backend.sum_per_channel(self.bias_axis(), 1.0, top_diff, 1.0, bias_diff)?;
        Ok(())
    }
}
