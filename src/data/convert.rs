//! Dataset converters writing LMDBs or LevelDBs of Datums with the same keys and record bytes
//! as upstream's tools, so either side reads the other's output:
//!
//! * [`convert_mnist`]: examples/mnist/convert_mnist_data.cpp: IDX image and label files
//!   (gzip-compressed or not), keys `%08d`, Datum `1 x rows x cols`, the raw bytes, the label.
//! * [`convert_cifar`]: examples/cifar10/convert_cifar_data.cpp: CIFAR-10 binary batches
//!   (1 label byte + 3,072 pixel bytes per record, gzip or not), keys `%05d`, Datum
//!   `3 x 32 x 32`, the bytes as stored, the label; `cifar10_train_lmdb` and
//!   `cifar10_test_lmdb` (or `_leveldb`) in the output folder.
//! * [`convert_imageset`]: tools/convert_imageset.cpp: a list of `file label` lines, keys
//!   `%08d_<file>`, raw (BGR, channel-major) or encoded Datums.
//! * [`convert_mnist_siamese`]: examples/siamese/convert_mnist_siamese_data.cpp: random pairs
//!   of MNIST images as 2-channel Datums, label 1 for a same-class pair.
//!
//! Labels are read as upstream reads them, through a C `char` (signed on x86): a label byte
//! above 127 becomes negative. Progress goes to the log (upstream's lines) and to an optional
//! callback, for a progress bar.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::datum::{encode_datum, image_to_datum, Datum};
use super::db::DbWriter;
use super::imgcodec::{encode_image, read_image, resize_linear, ColorMode, Image};
use super::{DataError, DbBackend, Result};
use crate::backend::{rng_from_seed, Rng};

/// How far a conversion has got, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// What is being written ("train", "test", "images", "mean").
    pub stage: &'a str,
    /// Records done in this stage.
    pub done: u64,
    /// Records in this stage.
    pub total: u64,
}

/// Records per write transaction, as upstream's tools commit.
const COMMIT_EVERY: u64 = 1000;

/// Reads a whole file (`what` is expected there), gunzipping it when it starts with gzip's
/// magic bytes.
pub fn read_maybe_gzip(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::read(path, what, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A label byte as upstream stores it: through a signed `char`.
fn char_label(byte: u8) -> i32 {
    i32::from(byte as i8)
}

/// An MNIST-format dataset: IDX images and their labels, checked against each other.
pub(crate) struct IdxDataset {
    image_bytes: Vec<u8>,
    label_bytes: Vec<u8>,
    pub(crate) num_items: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl IdxDataset {
    /// Reads and checks the IDX image and label files (gzip-compressed or not).
    pub(crate) fn read(images: &Path, labels: &Path) -> Result<IdxDataset> {
        let image_bytes = read_maybe_gzip(images, "MNIST images (IDX file)")?;
        let label_bytes = read_maybe_gzip(labels, "MNIST labels (IDX file)")?;
        if image_bytes.len() < 16 {
            return Err(DataError::format(
                images,
                format!(
                    "{} bytes: too short for an IDX image header (16 bytes)",
                    image_bytes.len()
                ),
            ));
        }
        if label_bytes.len() < 8 {
            return Err(DataError::format(
                labels,
                format!(
                    "{} bytes: too short for an IDX label header (8 bytes)",
                    label_bytes.len()
                ),
            ));
        }
        let magic = be_u32(&image_bytes, 0);
        if magic != 2051 {
            return Err(DataError::format(
                images,
                format!("Incorrect image file magic: {magic} (an IDX image file starts with 2051)"),
            ));
        }
        let magic = be_u32(&label_bytes, 0);
        if magic != 2049 {
            return Err(DataError::format(
                labels,
                format!("Incorrect label file magic: {magic} (an IDX label file starts with 2049)"),
            ));
        }
        let num_items = be_u32(&image_bytes, 4) as usize;
        let num_labels = be_u32(&label_bytes, 4) as usize;
        if num_items != num_labels {
            return Err(DataError::format(
                images,
                format!(
                    "holds {num_items} images but {} holds {num_labels} labels",
                    labels.display()
                ),
            ));
        }
        let rows = be_u32(&image_bytes, 8) as usize;
        let cols = be_u32(&image_bytes, 12) as usize;
        // Checked: a corrupt header's product could wrap and pass the length check.
        let needed = rows
            .checked_mul(cols)
            .and_then(|size| size.checked_mul(num_items))
            .and_then(|pixels| pixels.checked_add(16));
        if needed.is_none_or(|needed| image_bytes.len() < needed) {
            let needed = needed.map_or("more than can be addressed".to_string(), |n| n.to_string());
            return Err(DataError::format(
                images,
                format!(
                    "the header announces {num_items} images of {rows}x{cols} ({needed} bytes) but \
                     the file holds {} bytes",
                    image_bytes.len()
                ),
            ));
        }
        if label_bytes.len() < 8 + num_items {
            return Err(DataError::format(
                labels,
                format!(
                    "the header announces {num_items} labels but the file holds {} bytes",
                    label_bytes.len()
                ),
            ));
        }
        Ok(IdxDataset {
            image_bytes,
            label_bytes,
            num_items,
            rows,
            cols,
        })
    }

    /// The pixels of image `item`, row-major.
    pub(crate) fn image(&self, item: usize) -> &[u8] {
        let size = self.rows * self.cols;
        &self.image_bytes[16 + item * size..16 + (item + 1) * size]
    }

    /// The label of image `item`, through a signed `char` as upstream reads it.
    fn label(&self, item: usize) -> i32 {
        char_label(self.label_bytes[8 + item])
    }

    /// The label byte of image `item`, as stored.
    pub(crate) fn label_byte(&self, item: usize) -> u8 {
        self.label_bytes[8 + item]
    }
}

/// Converts MNIST-format IDX files into an LMDB at `out` (which must not exist). Returns the
/// number of records written.
pub fn convert_mnist(images: &Path, labels: &Path, out: &Path) -> Result<u64> {
    convert_mnist_with(images, labels, out, DbBackend::Lmdb, &mut |_| {})
}

/// [`convert_mnist`] into a `backend` database, reporting progress to `progress`.
pub fn convert_mnist_with(
    images: &Path,
    labels: &Path,
    out: &Path,
    backend: DbBackend,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<u64> {
    let mnist = IdxDataset::read(images, labels)?;
    let IdxDataset {
        num_items,
        rows,
        cols,
        ..
    } = mnist;
    let mut writer = DbWriter::create(out, backend)?;
    log::info!("A total of {num_items} items.");
    log::info!("Rows: {rows} Cols: {cols}");
    let total = num_items as u64;
    for item in 0..num_items {
        let datum = Datum {
            channels: Some(1),
            height: Some(rows as i32),
            width: Some(cols as i32),
            data: Some(mnist.image(item).to_vec()),
            label: Some(mnist.label(item)),
            ..Default::default()
        };
        writer.put(format!("{item:08}"), encode_datum(&datum));
        let done = item as u64 + 1;
        if done.is_multiple_of(COMMIT_EVERY) {
            writer.commit()?;
            progress(Progress {
                stage: "images",
                done,
                total,
            });
        }
    }
    let written = writer.finish()?;
    progress(Progress {
        stage: "images",
        done: written,
        total,
    });
    log::info!("Processed {written} files.");
    Ok(written)
}

/// Converts MNIST-format IDX files into image pairs for a siamese net, in a `backend` database
/// at `out` (upstream: examples/siamese/convert_mnist_siamese_data.cpp, which writes LevelDB).
///
/// As many records as images, keys `%08d`. Record `k` pairs two images drawn independently and
/// uniformly (a draw modulo the image count, as upstream's `caffe_rng_rand() % num_items`; the
/// two may be the same image), stacked as the channels of a `2 x rows x cols` Datum, first
/// image first; its label is 1 when the two images' labels are equal, else 0. Upstream's
/// generator is seeded afresh each run, so its pairs differ from run to run; here `seed` fixes
/// them. Returns the number of records written.
pub fn convert_mnist_siamese(
    images: &Path,
    labels: &Path,
    out: &Path,
    backend: DbBackend,
    seed: u64,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<u64> {
    use rand::Rng as _;
    let mnist = IdxDataset::read(images, labels)?;
    let IdxDataset {
        num_items,
        rows,
        cols,
        ..
    } = mnist;
    if num_items == 0 {
        return Err(DataError::format(images, "holds no image to pair"));
    }
    let mut writer = DbWriter::create(out, backend)?;
    log::info!("A total of {num_items} items.");
    log::info!("Rows: {rows} Cols: {cols}");
    let mut rng = rng_from_seed(seed);
    let total = num_items as u64;
    for item in 0..num_items {
        let first = rng.next_u32() as usize % num_items;
        let second = rng.next_u32() as usize % num_items;
        let mut pixels = Vec::with_capacity(2 * rows * cols);
        pixels.extend_from_slice(mnist.image(first));
        pixels.extend_from_slice(mnist.image(second));
        let datum = Datum {
            channels: Some(2),
            height: Some(rows as i32),
            width: Some(cols as i32),
            data: Some(pixels),
            label: Some(i32::from(mnist.label(first) == mnist.label(second))),
            ..Default::default()
        };
        writer.put(format!("{item:08}"), encode_datum(&datum));
        let done = item as u64 + 1;
        if done.is_multiple_of(COMMIT_EVERY) {
            writer.commit()?;
            progress(Progress {
                stage: "pairs",
                done,
                total,
            });
        }
    }
    let written = writer.finish()?;
    progress(Progress {
        stage: "pairs",
        done: written,
        total,
    });
    Ok(written)
}

/// Bytes of one CIFAR-10 record: the label, then 3 planes of 32 x 32.
pub const CIFAR_RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// What [`convert_cifar`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarSummary {
    /// The training database (`OUT_DIR/cifar10_train_lmdb`, or `_leveldb`) and its record
    /// count.
    pub train_db: PathBuf,
    pub train: u64,
    /// The test database (`OUT_DIR/cifar10_test_lmdb`, or `_leveldb`) and its record count.
    pub test_db: PathBuf,
    pub test: u64,
}

/// The batch files in `dir`: `data_batch_<n>.bin[.gz]` in order of `n`, and
/// `test_batch.bin[.gz]`.
fn cifar_batches(dir: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let unreadable = |e| DataError::read(dir, "folder of CIFAR-10 batches", e);
    let entries = std::fs::read_dir(dir).map_err(unreadable)?;
    let mut train: Vec<(u64, PathBuf)> = Vec::new();
    let mut test: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name
            .strip_suffix(".bin.gz")
            .or_else(|| name.strip_suffix(".bin"));
        let Some(stem) = stem else { continue };
        if stem == "test_batch" {
            test.push(entry.path());
        } else if let Some(n) = stem.strip_prefix("data_batch_") {
            if let Ok(n) = n.parse::<u64>() {
                train.push((n, entry.path()));
            }
        }
    }
    train.sort();
    for pair in train.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(DataError::format(
                dir,
                format!(
                    "both {} and {} hold training batch {}: keep one",
                    pair[0].1.display(),
                    pair[1].1.display(),
                    pair[0].0
                ),
            ));
        }
    }
    if train.is_empty() {
        return Err(DataError::format(
            dir,
            "holds no training batch (data_batch_1.bin, data_batch_2.bin, ..., or .bin.gz)",
        ));
    }
    let test = match test.len() {
        0 => {
            return Err(DataError::format(
                dir,
                "holds no test batch (test_batch.bin or test_batch.bin.gz)",
            ))
        }
        1 => test.pop().expect("one element"),
        _ => {
            return Err(DataError::format(
                dir,
                "holds both test_batch.bin and test_batch.bin.gz: keep one",
            ))
        }
    };
    Ok((train.into_iter().map(|(_, p)| p).collect(), test))
}

/// Reads a CIFAR-10 batch file: a whole number of records.
fn read_cifar_batch(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gzip(path, "CIFAR-10 batch")?;
    if bytes.is_empty() || bytes.len() % CIFAR_RECORD_BYTES != 0 {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes is not a whole number of {CIFAR_RECORD_BYTES}-byte CIFAR-10 records",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

fn cifar_datum(record: &[u8]) -> Datum {
    Datum {
        channels: Some(3),
        height: Some(32),
        width: Some(32),
        data: Some(record[1..].to_vec()),
        label: Some(char_label(record[0])),
        ..Default::default()
    }
}

/// Converts the CIFAR-10 binary batches in `dir` into `out_dir/cifar10_train_lmdb` (every
/// `data_batch_*` in order) and `out_dir/cifar10_test_lmdb` (`test_batch`), creating `out_dir`
/// (and its parents) if need be.
///
/// Keys count records across the training batches (`00000`, `00001`, ...); for CIFAR-10's
/// batches of 10,000 that is upstream's `batch * 10000 + item`.
pub fn convert_cifar(dir: &Path, out_dir: &Path) -> Result<CifarSummary> {
    convert_cifar_with(dir, out_dir, DbBackend::Lmdb, &mut |_| {})
}

/// [`convert_cifar`] into `backend` databases (`cifar10_train_<backend>`, as upstream names
/// them), reporting progress to `progress`.
pub fn convert_cifar_with(
    dir: &Path,
    out_dir: &Path,
    backend: DbBackend,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<CifarSummary> {
    let (train_files, test_file) = cifar_batches(dir)?;
    std::fs::create_dir_all(out_dir).map_err(|error| DataError::Write {
        path: out_dir.to_path_buf(),
        what: "output folder",
        error,
    })?;
    let train_db = out_dir.join(format!("cifar10_train_{}", backend.name()));
    let test_db = out_dir.join(format!("cifar10_test_{}", backend.name()));
    for path in [&train_db, &test_db] {
        if path.exists() {
            return Err(DataError::format(
                path,
                "already exists: remove it or choose another output folder",
            ));
        }
    }

    let mut train_data = Vec::with_capacity(train_files.len());
    for path in &train_files {
        train_data.push(read_cifar_batch(path)?);
    }
    let test_data = read_cifar_batch(&test_file)?;

    log::info!("Writing Training data");
    let mut writer = DbWriter::create(&train_db, backend)?;
    let total: u64 = train_data
        .iter()
        .map(|b| (b.len() / CIFAR_RECORD_BYTES) as u64)
        .sum();
    let mut key = 0u64;
    for (i, batch) in train_data.iter().enumerate() {
        log::info!("Training Batch {}", i + 1);
        for record in batch.chunks_exact(CIFAR_RECORD_BYTES) {
            writer.put(format!("{key:05}"), encode_datum(&cifar_datum(record)));
            key += 1;
            if key.is_multiple_of(COMMIT_EVERY) {
                writer.commit()?;
                progress(Progress {
                    stage: "train",
                    done: key,
                    total,
                });
            }
        }
    }
    let train = writer.finish()?;
    progress(Progress {
        stage: "train",
        done: train,
        total,
    });

    log::info!("Writing Testing data");
    let mut writer = DbWriter::create(&test_db, backend)?;
    let total = (test_data.len() / CIFAR_RECORD_BYTES) as u64;
    for (item, record) in test_data.chunks_exact(CIFAR_RECORD_BYTES).enumerate() {
        writer.put(format!("{item:05}"), encode_datum(&cifar_datum(record)));
        let done = item as u64 + 1;
        if done.is_multiple_of(COMMIT_EVERY) {
            writer.commit()?;
            progress(Progress {
                stage: "test",
                done,
                total,
            });
        }
    }
    let test = writer.finish()?;
    progress(Progress {
        stage: "test",
        done: test,
        total,
    });
    Ok(CifarSummary {
        train_db,
        train,
        test_db,
        test,
    })
}

/// Options of [`convert_imageset`] (upstream's `convert_imageset` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesetOptions {
    /// Resize every image to `resize_height x resize_width` (bilinear) when both are positive.
    pub resize_height: u32,
    pub resize_width: u32,
    /// Shuffle the list before writing, with a generator seeded from `seed`.
    pub shuffle: bool,
    pub seed: u64,
    /// Read images as grey (one channel) instead of BGR.
    pub gray: bool,
    /// Store the image file (or a re-encoding) instead of raw pixels.
    pub encoded: bool,
    /// Encode as this type ("png", "jpg"); empty: the file's own extension. Setting it
    /// implies `encoded`.
    pub encode_type: String,
    /// Check that every record holds as many bytes as the first.
    pub check_size: bool,
    /// The database to write.
    pub backend: DbBackend,
}

/// What [`convert_imageset`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesetSummary {
    /// Lines in the list.
    pub total: usize,
    /// Records written.
    pub written: u64,
    /// Files that could not be read or decoded (skipped, as upstream skips them).
    pub skipped: Vec<PathBuf>,
}

/// C's `atoi`: optional leading whitespace and sign, then digits; 0 when there are none.
fn atoi(text: &str) -> i32 {
    let text = text.trim_start();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        value = (value * 10 + i64::from(b - b'0')).min(i64::from(i32::MAX) + 1);
    }
    let value = if negative { -value } else { value };
    value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Parses a list file: each line is `<file> <label>`, split at the last space (a line without
/// one is all file name, label 0), as upstream reads it.
pub fn read_image_list(list: &Path) -> Result<Vec<(String, i32)>> {
    let text = std::fs::read_to_string(list).map_err(|e| DataError::read(list, "image list", e))?;
    Ok(text
        .lines()
        .map(|line| match line.rfind(' ') {
            Some(pos) => (line[..pos].to_string(), atoi(&line[pos + 1..])),
            None => (line.to_string(), atoi(line)),
        })
        .collect())
}

/// Shuffles `items` (Fisher-Yates) with draws from `rng`: the same order for the same
/// generator state.
pub fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    use rand::Rng as _;
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The file's extension, lowercased (the whole name when it has no dot, as upstream).
fn extension_of(file: &str) -> String {
    match file.rfind('.') {
        Some(p) => file[p + 1..].to_ascii_lowercase(),
        None => file.to_ascii_lowercase(),
    }
}

/// Whether `file`'s extension is `encoding` (jpeg counting as jpg), upstream's `matchExt`.
fn matches_extension(file: &str, encoding: &str) -> bool {
    let ext = extension_of(file);
    let encoding = encoding.to_ascii_lowercase();
    ext == encoding || (encoding == "jpg" && ext == "jpeg")
}

/// Converts the images listed in `list` (paths relative to `root`) into a database at `out`
/// (`options.backend`).
/// Unreadable images are logged and skipped, as upstream does; their line numbers are not
/// reused, so keys keep the list's numbering.
pub fn convert_imageset(
    root: &Path,
    list: &Path,
    out: &Path,
    options: &ImagesetOptions,
) -> Result<ImagesetSummary> {
    convert_imageset_with(root, list, out, options, &mut |_| {})
}

/// The Datum of listed image `file` (read from `path`, resized as `options` say): its pixels, or
/// with an `encoding` the image encoded so, where the file's own bytes are kept when they
/// already are that encoding of the image unchanged (upstream's `ReadImageToDatum`).
fn imageset_datum(
    path: &Path,
    file: &str,
    image: &Image,
    label: i32,
    encoding: &str,
    options: &ImagesetOptions,
) -> Result<Datum> {
    if encoding.is_empty() {
        let mut datum = image_to_datum(image);
        datum.label = Some(label);
        return Ok(datum);
    }
    let is_color = !options.gray;
    let keep_file = (image.channels == 3) == is_color
        && options.resize_height == 0
        && options.resize_width == 0
        && matches_extension(file, encoding);
    let bytes = if keep_file {
        std::fs::read(path).map_err(|e| DataError::read(path, "image", e))?
    } else {
        encode_image(image, encoding)
            .map_err(|e| DataError::format(path, format!("cannot encode as {encoding}: {e}")))?
    };
    Ok(Datum {
        data: Some(bytes),
        label: Some(label),
        encoded: Some(true),
        ..Default::default()
    })
}

/// [`convert_imageset`], reporting progress to `progress`.
pub fn convert_imageset_with(
    root: &Path,
    list: &Path,
    out: &Path,
    options: &ImagesetOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ImagesetSummary> {
    let mut lines = read_image_list(list)?;
    if options.shuffle {
        log::info!("Shuffling data");
        shuffle(&mut lines, &mut rng_from_seed(options.seed));
    }
    log::info!("A total of {} images.", lines.len());
    if !options.encode_type.is_empty() && !options.encoded {
        log::info!("encode_type specified, assuming encoded=true.");
    }
    let is_color = !options.gray;
    let mode = if is_color {
        ColorMode::Color
    } else {
        ColorMode::Gray
    };
    let (rh, rw) = (
        options.resize_height as usize,
        options.resize_width as usize,
    );
    let resize = rh > 0 && rw > 0;

    let mut writer = DbWriter::create(out, options.backend)?;
    let mut summary = ImagesetSummary {
        total: lines.len(),
        ..Default::default()
    };
    let total = lines.len() as u64;
    let mut data_size: Option<usize> = None;
    let mut count = 0u64;
    for (line_id, (file, label)) in lines.iter().enumerate() {
        let mut encoding = options.encode_type.clone();
        if options.encoded && encoding.is_empty() {
            if !file.contains('.') {
                log::warn!("Failed to guess the encoding of '{file}'");
            }
            encoding = extension_of(file);
        }
        let path = root.join(file);
        let image = match read_image(&path, mode) {
            Ok(image) => image,
            Err(e) => {
                log::error!("Could not open or find file {} ({e})", path.display());
                summary.skipped.push(path);
                continue;
            }
        };
        let image = if resize {
            resize_linear(&image, rh, rw)
        } else {
            image
        };
        let datum = imageset_datum(&path, file, &image, *label, &encoding, options)?;
        if options.check_size {
            let size = datum.data.as_ref().map_or(0, Vec::len);
            let expected = *data_size
                .get_or_insert((datum.channels() * datum.height() * datum.width()).max(0) as usize);
            if count > 0 && size != expected {
                return Err(DataError::format(
                    &path,
                    format!("Incorrect data field size {size} (the first record's is {expected})"),
                ));
            }
        }
        writer.put(format!("{line_id:08}_{file}"), encode_datum(&datum));
        count += 1;
        if count.is_multiple_of(COMMIT_EVERY) {
            writer.commit()?;
            log::info!("Processed {count} files.");
        }
        progress(Progress {
            stage: "images",
            done: line_id as u64 + 1,
            total,
        });
    }
    summary.written = writer.finish()?;
    if !count.is_multiple_of(COMMIT_EVERY) {
        log::info!("Processed {count} files.");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_reads_like_c() {
        assert_eq!(atoi("7"), 7);
        assert_eq!(atoi(" -3x"), -3);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi("12\r"), 12);
        assert_eq!(atoi("99999999999"), i32::MAX);
    }

    #[test]
    fn extensions_match_as_upstream() {
        assert!(matches_extension("a/b.JPEG", "jpg"));
        assert!(matches_extension("x.png", "PNG"));
        assert!(!matches_extension("x.png", "jpg"));
        assert_eq!(extension_of("noext"), "noext");
    }

    #[test]
    fn labels_go_through_a_signed_char() {
        assert_eq!(char_label(9), 9);
        assert_eq!(char_label(200), -56);
    }
}
