//! Eltwise: combines same-shaped bottoms element by element (upstream:
//! src/caffe/layers/eltwise_layer.cpp). `eltwise_param.operation`: SUM (default) with one
//! optional `coeff` per bottom, PROD (its gradient a product of the other bottoms with
//! `stable_prod_grad`, the default, else `top / bottom`), or MAX, whose gradient goes to the
//! bottom that won. Ties: bottom 1 beats bottom 0, and after that the earlier bottom keeps it.

use crate::backend::{Backend, Src};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::eltwise_parameter::EltwiseOp;
use crate::proto::caffe::LayerParameter;

/// The Eltwise layer.
pub struct EltwiseLayer<B: Backend> {
    op: EltwiseOp,
    /// The SUM coefficients as given (empty: all 1).
    coeff: Vec<f32>,
    stable_prod_grad: bool,
    /// MAX: the index of the winning bottom at each element.
    mask: Option<Blob<B>>,
}

impl<B: Backend> EltwiseLayer<B> {
    /// Reads `eltwise_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.eltwise_param.clone().unwrap_or_default();
        let op = match p.operation {
            None => EltwiseOp::Sum,
            Some(v) => EltwiseOp::try_from(v).map_err(|_| {
                LayerError::invalid(format!(
                    "eltwise_param.operation {v} is not PROD (0), SUM (1) or MAX (2)"
                ))
            })?,
        };
        if op == EltwiseOp::Prod && !p.coeff.is_empty() {
            return Err(LayerError::invalid(
                "eltwise_param.coeff: Eltwise layer only takes coefficients for summation",
            ));
        }
        Ok(EltwiseLayer {
            op,
            coeff: p.coeff.clone(),
            stable_prod_grad: p.stable_prod_grad(),
            mask: None,
        })
    }

    fn coeff(&self, i: usize) -> f32 {
        self.coeff.get(i).copied().unwrap_or(1.0)
    }

    fn mask(&mut self) -> Result<&mut Blob<B>, LayerError> {
        self.mask
            .as_mut()
            .ok_or_else(|| LayerError::invalid("Eltwise MAX run before reshape"))
    }
}

impl<B: Backend> Layer<B> for EltwiseLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Eltwise"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::AtLeast(2), Count::Exactly(1))
    }

    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let n = blobs.num_bottom();
        if !self.coeff.is_empty() && self.coeff.len() != n {
            return Err(LayerError::invalid(format!(
                "eltwise_param.coeff: Eltwise Layer takes one coefficient per bottom blob \
                 ({} given for {n} bottoms)",
                self.coeff.len()
            )));
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottoms, mut top) = blobs.forward_all()?;
        let shape = bottoms[0].shape().to_vec();
        for (i, bottom) in bottoms.iter().enumerate().skip(1) {
            if bottom.shape() != shape.as_slice() {
                return Err(LayerError::invalid(format!(
                    "Eltwise bottoms must have the same shape: bottom 0 is {}, bottom {i} is {}",
                    bottoms[0].shape_string(),
                    bottom.shape_string()
                )));
            }
        }
        top[0].reshape(&shape)?;
        if self.op == EltwiseOp::Max {
            match &mut self.mask {
                Some(mask) => mask.reshape(&shape)?,
                None => self.mask = Some(Blob::new(ctx.backend, &shape)?),
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
        let b = ctx.backend;
        let (bottoms, mut top) = blobs.forward_all()?;
        let y = top[0].data_mut();
        let n = bottoms[0].count();
        match self.op {
            EltwiseOp::Prod => {
                let (x0, x1) = (Src::At(bottoms[0].data(), 0), Src::At(bottoms[1].data(), 0));
                b.mul(n, x0, x1, y, 0)?;
                for x in &bottoms[2..] {
                    b.mul(n, Src::InPlace, Src::At(x.data(), 0), y, 0)?;
                }
            }
            EltwiseOp::Sum => {
                b.set(n, 0.0, y, 0)?;
                for (i, x) in bottoms.iter().enumerate() {
                    b.axpy(n, self.coeff(i), x.data(), 0, y, 0)?;
                }
            }
            EltwiseOp::Max => {
                // Start from bottom 1 so that bottom 0 wins only when strictly greater, as
                // upstream's first comparison; later bottoms must be strictly greater too.
                let mask = self.mask()?.data_mut();
                b.copy(n, bottoms[1].data(), 0, y, 0)?;
                b.set(n, 1.0, mask, 0)?;
                b.running_argmax(n, 0.0, bottoms[0].data(), 0, y, 0, mask, 0)?;
                for (i, x) in bottoms.iter().enumerate().skip(2) {
                    b.running_argmax(n, i as f32, x.data(), 0, y, 0, mask, 0)?;
                }
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
        let b = ctx.backend;
        let (top, mut bottoms) = blobs.backward_all()?;
        let (y, dy) = (top[0].data(), top[0].diff());
        let n = top[0].count();
        for i in (0..bottoms.len()).filter(|&i| propagate_down[i]) {
            let (before, rest) = bottoms.split_at_mut(i);
            let (current, after) = rest.split_first_mut().expect("i < bottoms.len()");
            let others: Vec<&Blob<B>> = before.iter().chain(after.iter()).map(|x| &**x).collect();
            let (x, dx) = current.data_diff_mut();
            match self.op {
                EltwiseOp::Prod => {
                    if self.stable_prod_grad {
                        b.copy(n, others[0].data(), 0, dx, 0)?;
                        for other in &others[1..] {
                            b.mul(n, Src::At(other.data(), 0), Src::InPlace, dx, 0)?;
                        }
                    } else {
                        b.div(n, Src::At(y, 0), Src::At(x, 0), dx, 0)?;
                    }
                    b.mul(n, Src::InPlace, Src::At(dy, 0), dx, 0)?;
                }
                EltwiseOp::Sum => {
                    let c = self.coeff(i);
                    if c == 1.0 {
                        b.copy(n, dy, 0, dx, 0)?;
                    } else {
                        b.scale(n, c, Src::At(dy, 0), dx, 0)?;
                    }
                }
                EltwiseOp::Max => {
                    let mask = self.mask()?.data();
                    b.copy_where_eq(n, mask, 0, i as f32, dy, 0, dx, 0)?;
                }
            }
        }
        Ok(())
    }
}
