//! MemoryData: batches from arrays the program hands over rather than from a file (upstream:
//! src/caffe/layers/memory_data_layer.cpp; pycaffe's `Net.set_input_arrays`).
//!
//! `memory_data_param { batch_size: 8 channels: 3 height: 32 width: 32 }` fixes the shape of
//! the `data` top, `[batch_size, channels, height, width]`, and of the `label` top,
//! `[batch_size]`. Data comes in two ways, as upstream:
//!
//! * [`MemoryDataLayer::reset`] (upstream's `Reset`, what `set_input_arrays` calls): `n` items
//!   and `n` labels taken as they are; `transform_param` is *not* applied (upstream warns).
//! * [`MemoryDataLayer::add_datums`] (upstream's `AddDatumVector`): Datums run through
//!   `transform_param` (scale, mirror, crop, mean) into the layer's own copy; no more can be
//!   added, nor the batch size changed, until every batch of them has been served once.
//!
//! Each forward pass serves the next `batch_size` items, wrapping around to the first after
//! the last; `n` must be a multiple of the batch size. The program reaches the layer through
//! [`Layer::as_any_mut`] (the net's [`Net::set_input_arrays`](crate::net::Net) feeds its
//! first layer, as pycaffe does).

use rand::Rng as _;

use crate::backend::{rng_from_seed, Backend, Rng};
use crate::blob::Blob;
use crate::data::datum::datum_shape;
use crate::data::DataTransformer;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::{Datum, LayerParameter, Phase, TransformationParameter};

/// The MemoryData layer.
pub struct MemoryDataLayer {
    batch_size: usize,
    channels: usize,
    height: usize,
    width: usize,
    transform_param: Option<TransformationParameter>,
    phase: Phase,
    /// The items served, `n x channels x height x width`, and their `n` labels; `None` until
    /// the program sets them.
    data: Option<(Vec<f32>, Vec<f32>)>,
    /// The first item of the next batch.
    pos: usize,
    /// Whether data added by [`MemoryDataLayer::add_datums`] has not all been served yet.
    has_new_data: bool,
    /// Draws of the transformer's mirror and crop.
    rng: Rng,
}

fn positive(value: u32, field: &str) -> Result<usize, LayerError> {
    if value == 0 {
        return Err(LayerError::invalid(format!(
            "memory_data_param.{field} must be specified and positive"
        )));
    }
    Ok(value as usize)
}

impl MemoryDataLayer {
    /// Reads and checks `memory_data_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.memory_data_param.unwrap_or_default();
        Ok(MemoryDataLayer {
            batch_size: positive(p.batch_size(), "batch_size")?,
            channels: positive(p.channels(), "channels")?,
            height: positive(p.height(), "height")?,
            width: positive(p.width(), "width")?,
            transform_param: param.transform_param.clone(),
            phase: param.phase(),
            data: None,
            pos: 0,
            has_new_data: false,
            rng: rng_from_seed(0),
        })
    }

    /// The number of items one forward pass serves.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// `[channels, height, width]` of one item.
    pub fn item_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
    fn item_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// The number of items held (0 before any is set).
    pub fn num_items(&self) -> usize {
        self.data.as_ref().map_or(0, |(_, labels)| labels.len())
    }

    fn check_multiple(&self, n: usize) -> Result<(), LayerError> {
        if n == 0 || !n.is_multiple_of(self.batch_size) {
            return Err(LayerError::invalid(format!(
                "MemoryData: the number of items ({n}) must be a positive multiple of the batch \
                 size ({})",
                self.batch_size
            )));
        }
        Ok(())
    }

    /// Serves `data` (`n` items of `[channels, height, width]`, item-major) and `labels` (`n`
    /// values) from the next forward pass on, starting with the first item; `data_shape` is
    /// the array's shape (`[n, channels, height, width]`, as pycaffe passes it). The values
    /// are used as they are, without `transform_param`.
    pub fn reset(
        &mut self,
        data: Vec<f32>,
        data_shape: &[usize],
        labels: Vec<f32>,
    ) -> Result<(), LayerError> {
        let [c, h, w] = self.item_shape();
        let n = labels.len();
        if data_shape.len() != 4 || data_shape[1..] != [c, h, w] {
            return Err(LayerError::invalid(format!(
                "MemoryData: the data array is {data_shape:?} but the layer takes \
                 [n, {c}, {h}, {w}] (memory_data_param channels, height, width)"
            )));
        }
        if data_shape[0] != n {
            return Err(LayerError::invalid(format!(
                "MemoryData: data and labels must have the same first dimension ({} items, {n} \
                 labels)",
                data_shape[0]
            )));
        }
        if data.len() != n * self.item_len() {
            return Err(LayerError::invalid(format!(
                "MemoryData: the data array of shape {data_shape:?} holds {} values",
                data.len()
            )));
        }
        self.check_multiple(n)?;
        if self.transform_param.is_some() {
            log::warn!("MemoryData does not transform array data on Reset()");
        }
        self.data = Some((data, labels));
        self.pos = 0;
        Ok(())
    }

    /// Transforms `datums` by `transform_param` (each must transform to `[channels, height,
    /// width]`) and serves them, with their labels, from the next forward pass on. Refused
    /// while earlier added data has not all been served.
    pub fn add_datums(&mut self, datums: &[Datum]) -> Result<(), LayerError> {
        if self.has_new_data {
            return Err(LayerError::invalid(
                "MemoryData: cannot add data until the current data has been consumed",
            ));
        }
        self.check_multiple(datums.len())?;
        let param = self.transform_param.clone().unwrap_or_default();
        let transformer = DataTransformer::new(&param, self.phase)
            .map_err(|e| LayerError::invalid(e.to_string()))?;
        let want = [1, self.channels, self.height, self.width];
        let item_len = self.item_len();
        let mut data = vec![0.0; datums.len() * item_len];
        for (i, (datum, out)) in datums
            .iter()
            .zip(data.chunks_exact_mut(item_len))
            .enumerate()
        {
            let item_error = |e: &dyn std::fmt::Display| {
                LayerError::invalid(format!("MemoryData: datum {i}: {e}"))
            };
            let shape = transformer.infer_shape(datum).map_err(|e| item_error(&e))?;
            if shape != want {
                let stored = datum_shape(datum).map_err(|e| item_error(&e))?;
                return Err(item_error(&format!(
                    "a {stored} datum transforms to {:?} but the layer takes {:?}",
                    &shape[1..],
                    &want[1..]
                )));
            }
            transformer
                .transform(datum, out, &mut self.rng)
                .map_err(|e| item_error(&e))?;
        }
        let labels = datums.iter().map(|d| d.label() as f32).collect();
        self.data = Some((data, labels));
        self.pos = 0;
        self.has_new_data = true;
        Ok(())
    }

    /// Changes the number of items a forward pass serves (upstream's `set_batch_size`); the tops
    /// take the new shape on the next forward pass. Refused while added data has not all been
    /// served, and when the items held are not a multiple of the new size.
    pub fn set_batch_size(&mut self, batch_size: usize) -> Result<(), LayerError> {
        if self.has_new_data {
            return Err(LayerError::invalid(
                "MemoryData: cannot change batch_size until the current data has been consumed",
            ));
        }
        if batch_size == 0 {
            return Err(LayerError::invalid(
                "MemoryData: batch_size must be positive",
            ));
        }
        let held = self.num_items();
        if held > 0 && !held.is_multiple_of(batch_size) {
            return Err(LayerError::invalid(format!(
                "MemoryData: the {held} items held are not a multiple of the new batch size \
                 {batch_size}"
            )));
        }
        self.batch_size = batch_size;
        // Upstream keeps the position; a position inside a batch of the new size would run
        // past the end, so that one restarts at the first item.
        if !self.pos.is_multiple_of(batch_size) {
            self.pos = 0;
        }
        Ok(())
    }

    fn reshape_tops<B: Backend>(&self, blobs: &mut Blobs<'_, B>) -> Result<(), LayerError> {
        let [c, h, w] = self.item_shape();
        blobs.top_mut(0).reshape(&[self.batch_size, c, h, w])?;
        blobs.top_mut(1).reshape(&[self.batch_size])?;
        Ok(())
    }
}

impl<B: Backend> Layer<B> for MemoryDataLayer {
    fn layer_type(&self) -> &'static str {
        "MemoryData"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(0, 2)
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        self.phase = ctx.phase;
        self.rng = rng_from_seed(ctx.rng.next_u64());
        self.reshape_tops(blobs)
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        self.reshape_tops(blobs)
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let item_len = self.item_len();
        let (batch, pos) = (self.batch_size, self.pos);
        let (data, labels) = self.data.as_ref().ok_or_else(|| {
            LayerError::invalid(
                "MemoryData needs its data before the first forward pass: set it with \
                 set_input_arrays (MemoryDataLayer::reset) or add_datums",
            )
        })?;
        let n = labels.len();
        blobs
            .top_mut(0)
            .set_data(&data[pos * item_len..(pos + batch) * item_len])?;
        blobs.top_mut(1).set_data(&labels[pos..pos + batch])?;
        self.pos = (pos + batch) % n;
        if self.pos == 0 {
            self.has_new_data = false;
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}
