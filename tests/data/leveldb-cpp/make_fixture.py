# Writes a LevelDB of Caffe Datums with C++ leveldb (through plyvel, default options:
# snappy compression): the first 8 Fashion-MNIST training images, keys %08d; records 0-5 are
# compacted into a table file, 6 and 7 are left in the write-ahead log.
import gzip, sys, plyvel

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def datum(pixels, label, rows, cols):
    return (b"\x08" + varint(1) + b"\x10" + varint(rows) + b"\x18" + varint(cols)
            + b"\x22" + varint(len(pixels)) + pixels + b"\x28" + varint(label))

images_path, labels_path, out = sys.argv[1:4]
images = gzip.open(images_path).read()
labels = gzip.open(labels_path).read()
rows, cols = int.from_bytes(images[8:12], "big"), int.from_bytes(images[12:16], "big")
db = plyvel.DB(out, create_if_missing=True, error_if_exists=True)
for i in range(8):
    pixels = images[16 + i * rows * cols:16 + (i + 1) * rows * cols]
    db.put(b"%08d" % i, datum(pixels, labels[8 + i], rows, cols))
    if i == 5:
        db.compact_range()
db.close()
