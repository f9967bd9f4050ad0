//! Data: batches of records from an LMDB or a LevelDB (upstream:
//! src/caffe/layers/data_layer.cpp and base_data_layer.cpp).
//!
//! ```text
//! layer { name: "mnist" type: "Data" top: "data" top: "label"
//!   transform_param { scale: 0.00390625 }
//!   data_param { source: "mnist_train_lmdb" batch_size: 64 backend: LMDB } }
//! ```
//!
//! * Construction opens the database `backend` names (`Opened lmdb <source>` or `Opened
//!   leveldb <source>`), as upstream's constructor does. With `backend` unset (Caffe's
//!   default is LEVELDB) a source that is a LevelDB folder is read as one, anything else as an
//!   LMDB.
//! * Setup builds the [`DataTransformer`] for the layer's phase, skips `rand_skip`-bounded
//!   random records (`r mod rand_skip`, as upstream did before its multi-GPU reader), shapes
//!   `top[0]` from the first record (`output data size: N,C,H,W`) and `top[1]` (labels) to
//!   `N`, and starts the prefetch thread with a generator seeded from the net's.
//! * Each forward pass takes the next prefetched batch, reshapes the tops to it (the batch
//!   takes its shape from its first record) and uploads data and labels with the backend's
//!   upload op. Records walk the database in key order and wrap around at the end
//!   (`Restarting data prefetching from start.`). A record whose shape differs from the
//!   batch's first is an error naming its key.
//! * The prefetch thread times each batch it fills, split into reading records (fetching and
//!   parsing them) and transforming them (decoding included), as upstream's load_batch does;
//!   [`Layer::load_stats`] sums these, with the time forward waited for a batch, for `rcaffe
//!   time`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::backend::{Backend, Rng};
use crate::blob::Blob;
use crate::data::datum::parse_datum;
use crate::data::prefetch::{Batch, BatchSource, LoadStats, Prefetcher};
use crate::data::{key_string, DataError, DataTransformer, DbBackend, DbCursor};
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::data_parameter::Db;
use crate::proto::caffe::{LayerParameter, TransformationParameter};

/// The Data layer.
pub struct DataLayer {
    name: String,
    source: PathBuf,
    batch_size: usize,
    rand_skip: u32,
    prefetch: usize,
    transform_param: TransformationParameter,
    cursor: Option<DbCursor>,
    prefetcher: Option<Prefetcher>,
    output_labels: bool,
}

impl DataLayer {
    /// Reads `data_param` and opens the database.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let data = param.data_param.clone().unwrap_or_default();
        let source = data.source().to_string();
        if source.is_empty() {
            return Err(LayerError::invalid("data_param.source is required"));
        }
        let source = PathBuf::from(source);
        if data.batch_size() == 0 {
            return Err(LayerError::invalid(
                "data_param.batch_size must be positive",
            ));
        }
        if data.prefetch() == 0 {
            return Err(LayerError::invalid(
                "data_param.prefetch must be at least 1 (batches prepared ahead)",
            ));
        }
        let backend = match data.backend {
            None => DbBackend::detect(&source),
            Some(b) if b == Db::Leveldb as i32 => DbBackend::LevelDb,
            Some(b) if b == Db::Lmdb as i32 => DbBackend::Lmdb,
            Some(other) => {
                return Err(LayerError::invalid(format!(
                    "data_param.backend {other} is neither LEVELDB (0) nor LMDB (1)"
                )))
            }
        };
        let cursor = DbCursor::open(&source, backend).map_err(LayerError::from)?;
        Ok(DataLayer {
            name: param.name().to_string(),
            source,
            batch_size: data.batch_size() as usize,
            rand_skip: data.rand_skip(),
            prefetch: data.prefetch() as usize,
            transform_param: param.transform_param.clone().unwrap_or_default(),
            cursor: Some(cursor),
            prefetcher: None,
            output_labels: false,
        })
    }
}

/// Fills batches from the cursor on the prefetch thread (upstream's `DataLayer::load_batch`).
struct DatumBatches {
    cursor: DbCursor,
    transformer: DataTransformer,
    rng: Rng,
    batch_size: usize,
    output_labels: bool,
    /// The last fill's (read, transform) times.
    split: (Duration, Duration),
}

impl DatumBatches {
    /// Moves to the next record, wrapping around at the end.
    fn next(&mut self) -> Result<(), DataError> {
        if self.cursor.next_wrapping()? {
            log::info!("Restarting data prefetching from start.");
        }
        Ok(())
    }
}

impl BatchSource for DatumBatches {
    fn fill(&mut self, batch: &mut Batch) -> Result<(), DataError> {
        let path = self.cursor.path().to_path_buf();
        let mut first: Option<(Vec<u8>, [usize; 4])> = None;
        let mut item_len = 0;
        // Read: fetching and parsing records; transform: decoding and transforming them (as
        // upstream's load_batch splits its timers).
        let (mut read, mut transform) = (Duration::ZERO, Duration::ZERO);
        let mut read_start = Instant::now();
        for item in 0..self.batch_size {
            let key = self.cursor.key().to_vec();
            let in_record = |e: DataError| e.in_record(&path, &key);
            let datum = parse_datum(self.cursor.value()).map_err(in_record)?;
            let transform_start = Instant::now();
            read += transform_start - read_start;
            let datum = self.transformer.decoded(&datum).map_err(in_record)?;
            let shape = self.transformer.infer_shape(&datum).map_err(in_record)?;
            match &first {
                None => {
                    // The batch takes its shape from its first record.
                    item_len = shape[1] * shape[2] * shape[3];
                    batch.reshape(
                        [self.batch_size, shape[1], shape[2], shape[3]],
                        self.output_labels,
                    )?;
                    first = Some((key.clone(), shape));
                }
                Some((first_key, first_shape)) if *first_shape != shape => {
                    return Err(DataError::invalid(format!(
                        "transforms to {}x{}x{} but record '{}', the first of its batch, to \
                         {}x{}x{}: records of one batch must have the same shape",
                        shape[1],
                        shape[2],
                        shape[3],
                        key_string(first_key),
                        first_shape[1],
                        first_shape[2],
                        first_shape[3]
                    ))
                    .in_record(&path, &key));
                }
                Some(_) => {}
            }
            let out = &mut batch.data[item * item_len..(item + 1) * item_len];
            self.transformer
                .transform(&datum, out, &mut self.rng)
                .map_err(in_record)?;
            if self.output_labels {
                batch.labels[item] = datum.label() as f32;
            }
            read_start = Instant::now();
            transform += read_start - transform_start;
            self.next()?;
        }
        read += read_start.elapsed();
        self.split = (read, transform);
        Ok(())
    }

    fn last_fill_split(&mut self) -> Option<(Duration, Duration)> {
        Some(self.split)
    }
}

impl<B: Backend> Layer<B> for DataLayer {
    fn layer_type(&self) -> &'static str {
        "Data"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Exactly(0), Count::Range(1, 2))
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        self.output_labels = blobs.num_top() > 1;
        let transformer =
            DataTransformer::new(&self.transform_param, ctx.phase).map_err(LayerError::from)?;
        let mut cursor = self.cursor.take().ok_or_else(|| {
            LayerError::invalid(format!(
                "the Data layer reading {} was set up twice",
                self.source.display()
            ))
        })?;
        if self.rand_skip > 0 {
            let skip = ctx.rng.next_u32() % self.rand_skip;
            log::info!("Skipping first {skip} data points.");
            for _ in 0..skip {
                cursor.next_wrapping().map_err(LayerError::from)?;
            }
        }
        // Shape the tops from the first record, as upstream's DataLayerSetUp.
        let datum = parse_datum(cursor.value())
            .and_then(|d| transformer.infer_shape(&d))
            .map_err(|e| LayerError::from(e.in_record(&self.source, cursor.key())))?;
        let top_shape = [self.batch_size, datum[1], datum[2], datum[3]];
        blobs.top_mut(0).reshape(&top_shape)?;
        log::info!(
            "output data size: {},{},{},{}",
            top_shape[0],
            top_shape[1],
            top_shape[2],
            top_shape[3]
        );
        if self.output_labels {
            blobs.top_mut(1).reshape(&[self.batch_size])?;
        }
        let source = DatumBatches {
            cursor,
            transformer,
            rng: <Rng as rand::SeedableRng>::seed_from_u64(ctx.rng.next_u64()),
            batch_size: self.batch_size,
            output_labels: self.output_labels,
            split: (Duration::ZERO, Duration::ZERO),
        };
        self.prefetcher =
            Some(Prefetcher::start(&self.name, self.prefetch, source).map_err(LayerError::from)?);
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        // Data layers have no bottoms; forward reshapes the tops to each batch.
        Ok(())
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        forward_prefetched(self.prefetcher.as_mut(), "Data", blobs, self.output_labels)
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

    fn load_stats(&self) -> Option<LoadStats> {
        self.prefetcher.as_ref().map(Prefetcher::stats)
    }
}

/// The forward pass of a prefetching data layer (Data, ImageData, WindowData): the next batch
/// into top 0 and, with `labels`, its labels into top 1; the batch goes back to the loader.
pub(crate) fn forward_prefetched<B: Backend>(
    prefetcher: Option<&mut Prefetcher>,
    layer_type: &str,
    blobs: &mut Blobs<'_, B>,
    labels: bool,
) -> Result<(), LayerError> {
    let prefetcher = prefetcher.ok_or_else(|| {
        LayerError::invalid(format!(
            "the {layer_type} layer's forward ran before its setup"
        ))
    })?;
    let batch = prefetcher.next_batch().map_err(LayerError::from)?;
    let data = blobs.top_mut(0);
    data.reshape(&batch.shape)?;
    data.set_data(&batch.data)?;
    if labels {
        let top = blobs.top_mut(1);
        top.reshape(&[batch.labels.len()])?;
        top.set_data(&batch.labels)?;
    }
    prefetcher.recycle(batch);
    Ok(())
}
