//! Im2col: unrolls each image's sliding windows into columns, the matrix a convolution
//! multiplies by its weights (upstream: src/caffe/layers/im2col_layer.cpp).
//!
//! Reads `convolution_param`'s `axis`, `kernel_size`/`kernel_h`/`kernel_w`, `stride`, `pad` and
//! `dilation` as the Convolution layer does ([`Window::read`]); `num_output` and the fillers are
//! not used. A bottom `(n..., C, H, W)` gives a top `(n..., C kh kw, OH, OW)` whose channel
//! `c kh kw + i kw + j` at `(oh, ow)` holds the input pixel that kernel offset `(i, j)` of
//! channel `c` sees at output position `(oh, ow)` (0 in the padding). Backward sums each column
//! entry back into the pixel it came from (col2im).
//!
//! One and two spatial axes (one runs as two with a height of 1, the same numbers upstream's
//! N-D path gives); three or more are refused.

use crate::backend::{Backend, ConvGeom};
use crate::layers::base_conv::Window;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::{ConvolutionParameter, LayerParameter};

/// The Im2col layer.
pub struct Im2colLayer {
    param: ConvolutionParameter,
    // Set in setup.
    channel_axis: usize,
    window: Window,
    // Set in reshape.
    /// Images in the bottom: the product of the axes before the channel axis.
    num: usize,
    geom: ConvGeom,
}

impl Im2colLayer {
    /// Keeps `convolution_param`, read against the bottom in setup.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(Im2colLayer {
            param: param.convolution_param.clone().unwrap_or_default(),
            channel_axis: 0,
            window: Window {
                kernel: Vec::new(),
                stride: Vec::new(),
                pad: Vec::new(),
                dilation: Vec::new(),
            },
            num: 0,
            geom: ConvGeom {
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
            },
        })
    }

    fn num_spatial(&self) -> usize {
        self.window.kernel.len()
    }

    /// The output size along spatial axis `i` for an input of `size` (upstream's
    /// `(size + 2 pad - extent) / stride + 1`), refused when the window does not fit.
    fn output_dim(&self, i: usize, size: usize, shape: &str) -> Result<usize, LayerError> {
        let w = &self.window;
        let extent = w.dilation[i] * (w.kernel[i] - 1) + 1;
        let padded = size + 2 * w.pad[i];
        if padded < extent {
            return Err(LayerError::invalid(format!(
                "convolution_param.kernel_size: kernel extent {extent} larger than padded \
                 input {padded} along spatial axis {i} of bottom shape {shape}"
            )));
        }
        Ok((padded - extent) / w.stride[i] + 1)
    }
}

impl<B: Backend> Layer<B> for Im2colLayer {
    fn layer_type(&self) -> &'static str {
        "Im2col"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }

    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<crate::blob::Blob<B>>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        self.channel_axis = bottom
            .canonical_axis_index(self.param.axis() as isize)
            .map_err(|e| LayerError::invalid(format!("convolution_param.axis: {e}")))?;
        let num_spatial = bottom.num_axes() - self.channel_axis - 1;
        if !(1..=2).contains(&num_spatial) {
            return Err(LayerError::invalid(format!(
                "convolution_param.axis: {num_spatial} spatial axes after channel axis {} of \
                 bottom shape {}: only 1-D and 2-D Im2col is implemented (upstream's N-D \
                 im2col is not)",
                self.channel_axis,
                bottom.shape_string()
            )));
        }
        self.window = Window::read(&self.param, num_spatial)?;
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let bottom = blobs.bottom(0);
        let shape = bottom.shape().to_vec();
        let first_spatial = self.channel_axis + 1;
        if shape.len() != first_spatial + self.num_spatial() {
            return Err(LayerError::invalid(format!(
                "Im2col: bottom num_axes may not change: bottom shape {}, set up with {} axes",
                bottom.shape_string(),
                first_spatial + self.num_spatial()
            )));
        }
        let in_spatial = &shape[first_spatial..];
        let mut top_shape = shape.clone();
        for (i, &size) in in_spatial.iter().enumerate() {
            top_shape[self.channel_axis] *= self.window.kernel[i];
            top_shape[first_spatial + i] = self.output_dim(i, size, &bottom.shape_string())?;
        }
        self.num = shape[..self.channel_axis].iter().product();
        // One spatial axis runs as two with a height of 1.
        let pair = |v: &[usize], fill: usize| {
            if v.len() == 1 {
                (fill, v[0])
            } else {
                (v[0], v[1])
            }
        };
        let (height, width) = pair(in_spatial, 1);
        let (kernel_h, kernel_w) = pair(&self.window.kernel, 1);
        let (pad_h, pad_w) = pair(&self.window.pad, 0);
        let (stride_h, stride_w) = pair(&self.window.stride, 1);
        let (dilation_h, dilation_w) = pair(&self.window.dilation, 1);
        self.geom = ConvGeom {
            channels: shape[self.channel_axis],
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
        blobs.top_mut(0).reshape(&top_shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (im_len, col_len) = (self.geom.im_len(), self.geom.col_len());
        let (bottoms, mut tops) = blobs.forward_all()?;
        let (image, mut cols) = (bottoms[0].data_view(), tops[0].data_view_mut());
        for n in 0..self.num {
            let col = cols.reborrow().part(n * col_len, col_len);
            ctx.backend
                .im2col(&self.geom, image.part(n * im_len, im_len), col)?;
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
        let (im_len, col_len) = (self.geom.im_len(), self.geom.col_len());
        let (tops, mut bottoms) = blobs.backward_all()?;
        let (cols, mut image) = (tops[0].diff_view(), bottoms[0].diff_view_mut());
        for n in 0..self.num {
            let im = image.reborrow().part(n * im_len, im_len);
            ctx.backend
                .col2im(&self.geom, cols.part(n * col_len, col_len), im)?;
        }
        Ok(())
    }
}
