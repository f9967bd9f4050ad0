//! ImageData: batches of image files named in a list (upstream:
//! src/caffe/layers/image_data_layer.cpp).
//!
//! `image_data_param { source: "list.txt" root_folder: "images/" batch_size: 32
//! new_height: 256 new_width: 256 is_color: true shuffle: true rand_skip: 0 }`: each line of
//! the list is `<file> <label>` (split at the last space). Images are read as BGR (or grey with
//! `is_color: false`), resized when `new_height` and `new_width` are set, transformed by
//! `transform_param`, and prefetched on a background thread like the Data layer's batches.
//! With `shuffle`, the list is shuffled at setup and again each time it wraps around.

use std::path::PathBuf;

use rand::Rng as _;

use crate::backend::{Backend, Rng};
use crate::blob::Blob;
use crate::data::convert::{read_image_list, shuffle};
use crate::data::imgcodec::{read_image, resize_linear, ColorMode, Image};
use crate::data::prefetch::{Batch, BatchSource, Prefetcher};
use crate::data::{DataError, DataTransformer};
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::{ImageDataParameter, LayerParameter, TransformationParameter};

/// The ImageData layer.
pub struct ImageDataLayer {
    name: String,
    param: ImageDataParameter,
    prefetch: usize,
    transform_param: TransformationParameter,
    prefetcher: Option<Prefetcher>,
}

impl ImageDataLayer {
    /// Reads and checks `image_data_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.image_data_param.clone().unwrap_or_default();
        if p.source().is_empty() {
            return Err(LayerError::invalid("image_data_param.source is required"));
        }
        if p.batch_size() == 0 {
            return Err(LayerError::invalid(
                "image_data_param.batch_size must be positive",
            ));
        }
        if (p.new_height() == 0) != (p.new_width() == 0) {
            return Err(LayerError::invalid(
                "image_data_param: new_height and new_width must be set together",
            ));
        }
        let prefetch = param.data_param.as_ref().map_or(4, |d| d.prefetch()) as usize;
        Ok(ImageDataLayer {
            name: param.name().to_string(),
            param: p,
            prefetch,
            transform_param: param.transform_param.clone().unwrap_or_default(),
            prefetcher: None,
        })
    }
}

/// Reads the images of the list on the prefetch thread.
struct ImageBatches {
    lines: Vec<(String, i32)>,
    pos: usize,
    root: String,
    mode: ColorMode,
    resize: Option<(usize, usize)>,
    shuffle_rng: Option<Rng>,
    transformer: DataTransformer,
    rng: Rng,
    batch_size: usize,
}

/// The path of a list entry: the root folder joined with the file (the file alone when no
/// root is given).
fn image_path(root: &str, file: &str) -> PathBuf {
    if root.is_empty() {
        PathBuf::from(file)
    } else {
        PathBuf::from(root).join(file)
    }
}

fn load(
    root: &str,
    file: &str,
    mode: ColorMode,
    resize: Option<(usize, usize)>,
) -> Result<Image, DataError> {
    let image = read_image(&image_path(root, file), mode)?;
    Ok(match resize {
        Some((h, w)) => resize_linear(&image, h, w),
        None => image,
    })
}

impl BatchSource for ImageBatches {
    fn fill(&mut self, batch: &mut Batch) -> Result<(), DataError> {
        let mut first: Option<(String, [usize; 4])> = None;
        let mut item_len = 0;
        for item in 0..self.batch_size {
            let (file, label) = &self.lines[self.pos];
            let path = image_path(&self.root, file);
            let image = load(&self.root, file, self.mode, self.resize)?;
            let shape = [1, image.channels, image.height, image.width];
            let shape = match self.transformer.crop_size() {
                0 => shape,
                crop if image.height >= crop && image.width >= crop => [1, shape[1], crop, crop],
                crop => {
                    return Err(DataError::format(
                        &path,
                        format!(
                            "transform_param.crop_size {crop} is larger than the {}x{} image",
                            image.height, image.width
                        ),
                    ))
                }
            };
            match &first {
                None => {
                    item_len = shape[1] * shape[2] * shape[3];
                    batch.reshape([self.batch_size, shape[1], shape[2], shape[3]], true)?;
                    first = Some((file.clone(), shape));
                }
                Some((first_file, first_shape)) if *first_shape != shape => {
                    return Err(DataError::format(
                        &path,
                        format!(
                            "transforms to {}x{}x{} but {first_file}, the first image of its \
                             batch, to {}x{}x{}: images of one batch must have the same shape \
                             (set new_height and new_width, or crop_size)",
                            shape[1],
                            shape[2],
                            shape[3],
                            first_shape[1],
                            first_shape[2],
                            first_shape[3]
                        ),
                    ))
                }
                Some(_) => {}
            }
            let out = &mut batch.data[item * item_len..(item + 1) * item_len];
            self.transformer
                .transform_image(&image, out, &mut self.rng)
                .map_err(|e| match e {
                    DataError::Invalid(m) => DataError::format(&path, m),
                    other => other,
                })?;
            batch.labels[item] = *label as f32;
            self.pos += 1;
            if self.pos >= self.lines.len() {
                self.pos = 0;
                if let Some(rng) = &mut self.shuffle_rng {
                    shuffle(&mut self.lines, rng);
                }
            }
        }
        Ok(())
    }
}

impl<B: Backend> Layer<B> for ImageDataLayer {
    fn layer_type(&self) -> &'static str {
        "ImageData"
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
        let p = &self.param;
        let transformer =
            DataTransformer::new(&self.transform_param, ctx.phase).map_err(LayerError::from)?;
        let source = PathBuf::from(p.source());
        log::info!("Opening file {}", source.display());
        let mut lines = read_image_list(&source).map_err(LayerError::from)?;
        if lines.is_empty() {
            return Err(LayerError::invalid(format!(
                "image_data_param.source {}: the file is empty",
                source.display()
            )));
        }
        let mut shuffle_rng = None;
        if p.shuffle() {
            log::info!("Shuffling data");
            let mut rng = <Rng as rand::SeedableRng>::seed_from_u64(ctx.rng.next_u64());
            shuffle(&mut lines, &mut rng);
            shuffle_rng = Some(rng);
        }
        log::info!("A total of {} images.", lines.len());
        let mut pos = 0;
        if p.rand_skip() > 0 {
            let skip = (ctx.rng.next_u32() % p.rand_skip()) as usize;
            log::info!("Skipping first {skip} data points.");
            if skip >= lines.len() {
                return Err(LayerError::invalid(format!(
                    "image_data_param.rand_skip: not enough images to skip {skip} ({} listed)",
                    lines.len()
                )));
            }
            pos = skip;
        }
        let mode = if p.is_color() {
            ColorMode::Color
        } else {
            ColorMode::Gray
        };
        let resize =
            (p.new_height() > 0).then(|| (p.new_height() as usize, p.new_width() as usize));
        let root = p.root_folder().to_string();
        let image = load(&root, &lines[pos].0, mode, resize).map_err(LayerError::from)?;
        let crop = transformer.crop_size();
        let (h, w) = if crop > 0 {
            if image.height < crop || image.width < crop {
                return Err(LayerError::invalid(format!(
                    "transform_param.crop_size {crop} is larger than the {}x{} image {}",
                    image.height,
                    image.width,
                    image_path(&root, &lines[pos].0).display()
                )));
            }
            (crop, crop)
        } else {
            (image.height, image.width)
        };
        let batch_size = p.batch_size() as usize;
        let top_shape = [batch_size, image.channels, h, w];
        blobs.top_mut(0).reshape(&top_shape)?;
        log::info!(
            "output data size: {},{},{},{}",
            top_shape[0],
            top_shape[1],
            top_shape[2],
            top_shape[3]
        );
        blobs.top_mut(1).reshape(&[batch_size])?;
        let source = ImageBatches {
            lines,
            pos,
            root,
            mode,
            resize,
            shuffle_rng,
            transformer,
            rng: <Rng as rand::SeedableRng>::seed_from_u64(ctx.rng.next_u64()),
            batch_size,
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
        Ok(())
    }

    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        super::data::forward_prefetched(self.prefetcher.as_mut(), "ImageData", blobs, true)
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
