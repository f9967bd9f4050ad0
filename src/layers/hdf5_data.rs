//! HDF5Data: batches of rows from the datasets of HDF5 files (upstream:
//! src/caffe/layers/hdf5_data_layer.cpp).
//!
//! `hdf5_data_param { source: "list.txt" batch_size: 64 shuffle: false }`: `source` is a text
//! file naming HDF5 files (whitespace-separated, paths as written); each top reads the dataset
//! of its own name from them. A dataset may be float or integer (converted to float) with any
//! number of axes; the first axis counts rows and must agree across the tops of a file. A batch
//! takes `batch_size` rows in order, moving on to the next file at the end of one and back to
//! the first after the last. With `shuffle`, the file order is shuffled at setup and at each
//! wrap, and the row order each time a file is loaded or wrapped, as upstream does.

use std::path::{Path, PathBuf};

use rand::Rng as _;

use crate::backend::{Backend, Rng};
use crate::blob::Blob;
use crate::data::convert::shuffle;
use crate::data::hdf5::{Array, Hdf5Error, Reader};
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The HDF5Data layer.
pub struct Hdf5DataLayer {
    /// The dataset each top reads: the top's name.
    datasets: Vec<String>,
    source: PathBuf,
    batch_size: usize,
    /// The files `source` lists, and the order they are read in.
    files: Vec<PathBuf>,
    file_order: Vec<usize>,
    current_file: usize,
    /// The current file's datasets (one per top), and the order its rows are read in.
    loaded: Vec<Array>,
    row_order: Vec<usize>,
    current_row: usize,
    /// Present with `shuffle`.
    shuffle_rng: Option<Rng>,
}

fn hdf5_error(e: Hdf5Error) -> LayerError {
    LayerError::invalid(e.to_string())
}

impl Hdf5DataLayer {
    /// Reads and checks `hdf5_data_param`; the files are read at setup.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        if param.transform_param.is_some() {
            return Err(LayerError::invalid(
                "HDF5Data does not transform data: remove transform_param",
            ));
        }
        let p = param.hdf5_data_param.clone().unwrap_or_default();
        if p.source().is_empty() {
            return Err(LayerError::invalid("hdf5_data_param.source is required"));
        }
        if p.batch_size() == 0 {
            return Err(LayerError::invalid(
                "hdf5_data_param.batch_size must be positive",
            ));
        }
        Ok(Hdf5DataLayer {
            datasets: param.top.clone(),
            source: PathBuf::from(p.source()),
            batch_size: p.batch_size() as usize,
            files: Vec::new(),
            file_order: Vec::new(),
            current_file: 0,
            loaded: Vec::new(),
            row_order: Vec::new(),
            current_row: 0,
            shuffle_rng: p
                .shuffle()
                .then(|| <Rng as rand::SeedableRng>::seed_from_u64(0)),
        })
    }

    /// The file names `source` lists.
    fn read_source(&self) -> Result<Vec<PathBuf>, LayerError> {
        let text = std::fs::read_to_string(&self.source).map_err(|e| {
            LayerError::invalid(format!(
                "hdf5_data_param.source: Failed to open source file {}: {e}",
                self.source.display()
            ))
        })?;
        let files: Vec<PathBuf> = text.split_whitespace().map(PathBuf::from).collect();
        if files.is_empty() {
            return Err(LayerError::invalid(format!(
                "hdf5_data_param.source: Must have at least 1 HDF5 filename listed in {}",
                self.source.display()
            )));
        }
        Ok(files)
    }

    /// Reads every top's dataset from `path` and checks that they agree on the number of rows
    /// (and, after the first file, that each row has the shape of the top's).
    fn load_file(&mut self, path: &Path) -> Result<(), Hdf5Error> {
        log::debug!("Loading HDF5 file: {}", path.display());
        let reader = Reader::open(path)?;
        let mut arrays = Vec::with_capacity(self.datasets.len());
        for name in &self.datasets {
            let array = reader.read_array(name)?;
            if array.shape.is_empty() {
                return Err(reader.error(format!(
                    "dataset {name} is a scalar; HDF5Data needs at least 1 axis (rows)"
                )));
            }
            arrays.push(array);
        }
        let rows = arrays[0].shape[0];
        if rows == 0 {
            return Err(reader.error(format!("dataset {} has no rows", self.datasets[0])));
        }
        for (name, array) in self.datasets.iter().zip(&arrays).skip(1) {
            if array.shape[0] != rows {
                return Err(reader.error(format!(
                    "dataset {name} has {} rows but dataset {} has {rows}: the first \
                     dimensions of the tops' datasets must agree",
                    array.shape[0], self.datasets[0]
                )));
            }
        }
        if !self.loaded.is_empty() {
            for ((name, array), previous) in self.datasets.iter().zip(&arrays).zip(&self.loaded) {
                if array.shape[1..] != previous.shape[1..] {
                    return Err(reader.error(format!(
                        "dataset {name} has rows of shape {:?}, the earlier files {:?}",
                        &array.shape[1..],
                        &previous.shape[1..]
                    )));
                }
            }
        }
        self.loaded = arrays;
        self.row_order = (0..rows).collect();
        if let Some(rng) = &mut self.shuffle_rng {
            shuffle(&mut self.row_order, rng);
        }
        log::debug!("Successfully loaded {rows} rows");
        Ok(())
    }

    /// Moves to the next row: at the end of a file, on to the next file (reshuffling the file
    /// order after the last), and the row order reshuffled.
    fn advance(&mut self) -> Result<(), LayerError> {
        self.current_row += 1;
        if self.current_row < self.row_order.len() {
            return Ok(());
        }
        self.current_row = 0;
        if self.files.len() > 1 {
            self.current_file += 1;
            if self.current_file == self.files.len() {
                self.current_file = 0;
                if let Some(rng) = &mut self.shuffle_rng {
                    shuffle(&mut self.file_order, rng);
                }
                log::debug!("Looping around to first file.");
            }
            let path = self.files[self.file_order[self.current_file]].clone();
            self.load_file(&path).map_err(hdf5_error)?;
        } else if let Some(rng) = &mut self.shuffle_rng {
            shuffle(&mut self.row_order, rng);
        }
        Ok(())
    }
}

impl<B: Backend> Layer<B> for Hdf5DataLayer {
    fn layer_type(&self) -> &'static str {
        "HDF5Data"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Exactly(0), Count::AtLeast(1))
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        log::info!(
            "Loading list of HDF5 filenames from: {}",
            self.source.display()
        );
        self.files = self.read_source()?;
        log::info!("Number of HDF5 files: {}", self.files.len());
        self.file_order = (0..self.files.len()).collect();
        if let Some(rng) = &mut self.shuffle_rng {
            *rng = <Rng as rand::SeedableRng>::seed_from_u64(ctx.rng.next_u64());
            shuffle(&mut self.file_order, rng);
        }
        self.current_file = 0;
        self.current_row = 0;
        let first = self.files[self.file_order[0]].clone();
        self.load_file(&first).map_err(hdf5_error)?;
        for (i, array) in self.loaded.iter().enumerate() {
            let mut shape = array.shape.clone();
            shape[0] = self.batch_size;
            blobs.top_mut(i).reshape(&shape)?;
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if self.loaded.is_empty() {
            return Err(LayerError::invalid(
                "the HDF5Data layer's forward ran before its setup",
            ));
        }
        let mut batches: Vec<Vec<f32>> = self
            .loaded
            .iter()
            .map(|a| Vec::with_capacity(self.batch_size * a.shape[1..].iter().product::<usize>()))
            .collect();
        for _ in 0..self.batch_size {
            let row = self.row_order[self.current_row];
            for (batch, array) in batches.iter_mut().zip(&self.loaded) {
                let row_len = array.values.len() / array.shape[0];
                batch.extend_from_slice(&array.values[row * row_len..(row + 1) * row_len]);
            }
            self.advance()?;
        }
        for (i, batch) in batches.iter().enumerate() {
            blobs.top_mut(i).set_data(batch)?;
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
}
