# Writes the HDF5 fixtures of tests/data/hdf5 with h5py (run from this folder:
# /usr/bin/python3 make_fixtures.py). Deterministic: no random numbers but one seeded generator.
import h5py
import numpy as np

# Two files read by HDF5Data, in the manner of upstream's generate_sample_data.py, smaller:
# 10 rows of 2x3x2 data counting up, labels 1..10 and 2..11.
rows, channels, height, width = 10, 2, 3, 2
total = rows * channels * height * width
data = np.arange(total).reshape(rows, channels, height, width).astype('float32')
label = (1 + np.arange(rows)[:, np.newaxis]).astype('float32')
label2 = label + 1
with h5py.File('sample_data.h5', 'w') as f:
    f['data'] = data                            # float32, contiguous, 4 dims
    f['label'] = label                          # float32, 2 dims
    f['label2'] = label2.astype('float64')      # float64, 2 dims
with h5py.File('sample_data_2_gzip.h5', 'w') as f:
    gzip = {'compression': 'gzip', 'compression_opts': 1}
    f.create_dataset('data', data=(data + total).astype('float64'), chunks=(3, 2, 3, 2), **gzip)
    f.create_dataset('label', data=label, **gzip)
    f.create_dataset('label2', data=label2, dtype='uint8', **gzip)
    f.create_dataset('cube', data=np.arange(24, dtype='float32').reshape(2, 3, 4), **gzip)

# A caffemodel.h5 in upstream's Net::ToHDF5 layout: data/<layer>/<blob index>, every layer a
# group (layers without blobs too), float32 datasets in the blob's shape.
with h5py.File('upstream_layout.caffemodel.h5', 'w') as f:
    f.create_group('data/data')
    f['data/ip/0'] = (np.arange(6, dtype='float32').reshape(2, 3) - 2.5) / 4
    f['data/ip/1'] = np.array([0.5, -0.25], dtype='float32')
    f.create_group('data/loss')

# The hdf5_classification example's data, made as its notebook makes it but without sklearn:
# 4 float64 features, two classes as two shifted Gaussian clusters, float32 labels.
rng = np.random.default_rng(0)
def classes(n):
    y = rng.integers(0, 2, n)
    centers = np.array([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, -0.5, 0.0]])
    return centers[y] + rng.normal(0.0, 0.8, (n, 4)), y
X, y = classes(400)
Xt, yt = classes(200)
with h5py.File('classification/train.h5', 'w') as f:
    f['data'] = X
    f['label'] = y.astype(np.float32)
with h5py.File('classification/test.h5', 'w') as f:
    f.create_dataset('data', data=Xt, compression='gzip', compression_opts=1)
    f.create_dataset('label', data=yt.astype(np.float32), compression='gzip', compression_opts=1)
