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

# A snapshot pair in upstream's HDF5 layout for the tiny net of tests/solver/solver_loop.rs
# (ip1: 5x3 weights and 5 biases, ip2: 2x5 and 2), SGD: one history blob per parameter.
# learned_net is a NULLTERM fixed-length string of strlen + 1 bytes, as H5LTmake_dataset_string
# writes it; iter and current_step are int32 datasets of shape (1,), as hdf5_save_int writes.
shapes = {'ip1': [(5, 3), (5,)], 'ip2': [(2, 5), (2,)]}
def ramp(shape, scale):
    n = int(np.prod(shape))
    return (scale * (np.arange(n, dtype='float32') - n / 2) / n).reshape(shape)
with h5py.File('upstream_tiny_iter_2.caffemodel.h5', 'w') as f:
    for layer in ['data', 'act', 'loss']:
        f.create_group('data/' + layer)
    for layer, blobs in shapes.items():
        for i, shape in enumerate(blobs):
            f['data/%s/%d' % (layer, i)] = ramp(shape, 1.0)
with h5py.File('upstream_tiny_iter_2.solverstate.h5', 'w') as f:
    f.create_dataset('iter', data=np.array([2], dtype='int32'))
    learned = b'upstream_tiny_iter_2.caffemodel.h5'
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(learned) + 1)
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    h5py.h5d.create(f.id, b'learned_net', string_type, space).write(
        h5py.h5s.ALL, h5py.h5s.ALL, np.array(learned + b'\0', dtype='S%d' % (len(learned) + 1)))
    f.create_dataset('current_step', data=np.array([0], dtype='int32'))
    index = 0
    for layer, blobs in shapes.items():
        for shape in blobs:
            f['history/%d' % index] = ramp(shape, 0.01)
            index += 1
