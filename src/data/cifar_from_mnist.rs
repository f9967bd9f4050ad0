//! CIFAR-10's binary batches made from MNIST-format images (`rcaffe mnist-to-cifar`), so that
//! the CIFAR-10 nets (`cifar10_quick`, `cifar10_full`) train on Fashion-MNIST: each image is
//! centred in a 32x32 frame of zeros (Fashion-MNIST's 28x28 get a 2-pixel border) and repeated
//! in the three channels, as `../shared/datasets/fashion-cifar` was made. Records: 1 label byte
//! (as stored in the IDX file), then the three 32x32 channel planes.

use std::path::{Path, PathBuf};

use super::convert::{IdxDataset, CIFAR_RECORD_BYTES};
use super::{DataError, Result};

/// CIFAR-10's side.
const SIDE: usize = 32;
/// Records per training batch file, as CIFAR-10's.
pub const RECORDS_PER_BATCH: usize = 10_000;

/// What [`mnist_to_cifar`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarFromMnist {
    /// `data_batch_1.bin`, ...: the training images, [`RECORDS_PER_BATCH`] per file.
    pub train_batches: Vec<PathBuf>,
    pub train: usize,
    /// `test_batch.bin`: every test image.
    pub test_batch: PathBuf,
    pub test: usize,
}

/// The IDX file `stem` in `dir`, gzip-compressed or not.
fn idx_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let plain = dir.join(stem);
    let gzipped = dir.join(format!("{stem}.gz"));
    match (plain.exists(), gzipped.exists()) {
        (true, true) => Err(DataError::format(
            dir,
            format!("holds both {stem} and {stem}.gz: keep one"),
        )),
        (true, false) => Ok(plain),
        (false, true) => Ok(gzipped),
        (false, false) => Err(DataError::format(
            dir,
            format!("holds no {stem} (or {stem}.gz), MNIST's file name"),
        )),
    }
}

/// The CIFAR-10 records of `dataset`'s images.
fn records(dataset: &IdxDataset, path: &Path) -> Result<Vec<u8>> {
    let (rows, cols) = (dataset.rows, dataset.cols);
    if rows > SIDE || cols > SIDE {
        return Err(DataError::format(
            path,
            format!("images of {rows}x{cols} do not fit CIFAR-10's {SIDE}x{SIDE}"),
        ));
    }
    let (top, left) = ((SIDE - rows) / 2, (SIDE - cols) / 2);
    let mut out = vec![0u8; dataset.num_items * CIFAR_RECORD_BYTES];
    for (item, record) in out.chunks_exact_mut(CIFAR_RECORD_BYTES).enumerate() {
        record[0] = dataset.label_byte(item);
        let image = dataset.image(item);
        for plane in record[1..].chunks_exact_mut(SIDE * SIDE) {
            for (row, pixels) in image.chunks_exact(cols).enumerate() {
                let start = (top + row) * SIDE + left;
                plane[start..start + cols].copy_from_slice(pixels);
            }
        }
    }
    Ok(out)
}

/// Writes `bytes` to `path`, which must not exist (nothing the user has is overwritten).
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| DataError::Write {
            path: path.to_path_buf(),
            what: "CIFAR-10 batch (it must not exist yet)",
            error: e,
        })?;
    file.write_all(bytes).map_err(|e| DataError::Write {
        path: path.to_path_buf(),
        what: "CIFAR-10 batch",
        error: e,
    })
}

/// Reads MNIST's four IDX files from `idx_dir` (`train-images-idx3-ubyte`,
/// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each
/// gzip-compressed or not) and writes CIFAR-10's batches into `out_dir` (created if need be):
/// `data_batch_1.bin`, ... and `test_batch.bin`, uncompressed. Existing batch files are not
/// overwritten: that is an error.
pub fn mnist_to_cifar(idx_dir: &Path, out_dir: &Path) -> Result<CifarFromMnist> {
    let dataset = |part: &str| -> Result<(IdxDataset, PathBuf)> {
        let images = idx_file(idx_dir, &format!("{part}-images-idx3-ubyte"))?;
        let labels = idx_file(idx_dir, &format!("{part}-labels-idx1-ubyte"))?;
        Ok((IdxDataset::read(&images, &labels)?, images))
    };
    let (train, train_images) = dataset("train")?;
    let (test, test_images) = dataset("t10k")?;
    let train_records = records(&train, &train_images)?;
    let test_records = records(&test, &test_images)?;
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::Write {
        path: out_dir.to_path_buf(),
        what: "folder for the CIFAR-10 batches",
        error: e,
    })?;
    let mut train_batches = Vec::new();
    for (n, batch) in train_records
        .chunks(RECORDS_PER_BATCH * CIFAR_RECORD_BYTES)
        .enumerate()
    {
        let path = out_dir.join(format!("data_batch_{}.bin", n + 1));
        write_new(&path, batch)?;
        train_batches.push(path);
    }
    let test_batch = out_dir.join("test_batch.bin");
    write_new(&test_batch, &test_records)?;
    Ok(CifarFromMnist {
        train_batches,
        train: train.num_items,
        test_batch,
        test: test.num_items,
    })
}
