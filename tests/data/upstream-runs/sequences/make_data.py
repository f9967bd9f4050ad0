# Sequences for the recurrent parity runs: 16 streams, sequences of 8 steps, 64 steps per file.
import h5py, numpy as np
rng = np.random.RandomState(7)
T, N, ROWS = 8, 16, 64
def sequences(rows):
    cont = np.ones((rows, N), np.float32); cont[::T, :] = 0
    x = rng.uniform(-1, 1, (rows, N, 4)).astype(np.float32)
    prev = np.concatenate([np.zeros((1, N, 4), np.float32), x[:-1]]) * cont[:, :, None]
    label = np.argmax(x[:, :, :3] + prev[:, :, :3], axis=2).astype(np.float32)
    word = rng.randint(0, 10, (rows, N)).astype(np.float32)
    shift = lambda a: np.concatenate([np.zeros((1, N), np.float32), a[:-1]]) * cont
    prev_word = shift(word)
    word_label = ((word + prev_word + shift(prev_word)) % 3).astype(np.float32)
    return dict(x=x, cont=cont, label=label, word=word, word_label=word_label)
for name, rows in [("train", ROWS), ("test", ROWS // 2)]:
    with h5py.File(f"seq_{name}.h5", "w") as f:
        for k, v in sequences(rows).items():
            f.create_dataset(k, data=v)
    open(f"seq_{name}.txt", "w").write(f"sequences/seq_{name}.h5\n")
