"""The data set readers on small files the tests write in each format: the loaders return what was written,
columns in jets.FEATURES order whatever order the file keeps, and clear errors name the file and what is wrong."""

from __future__ import annotations

import gzip
import struct

import h5py
import numpy as np
import pytest

from fpgaflow.errors import StageError
from fpgaflow.plots import write_csv
from fpgaflow.spec import DatasetSpec
from fpgaflow_trainer import readers
from fpgaflow_trainer.datasets import FASHION_MNIST_CLASSES, load_dataset
from fpgaflow_trainer.jets import CLASSES, FEATURES
from fpgaflow_trainer.readers import DataFileError, read_idx, read_jets
from tests.synthetic_jets import synthetic_jets

N = 60
SHUFFLED = [FEATURES[i] for i in np.random.default_rng(1).permutation(len(FEATURES))]  # file column order


@pytest.fixture(scope="module")
def jets():
    x, y = synthetic_jets(N, seed=0)
    y[: len(CLASSES)] = np.arange(len(CLASSES))  # every class present
    return x, y


def onehot(y: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES), dtype=np.float32)[y]


def check(result, jets, fmt):
    x, y, found = result
    assert found == fmt
    assert x.dtype == np.float32 and x.shape == (N, len(FEATURES))
    np.testing.assert_array_equal(x, jets[0])
    np.testing.assert_array_equal(y, jets[1])


# ------------------------------------------------------------------------------------------- formats


def test_arff_of_openml(tmp_path, jets):
    """OpenML's form: attribute names without the j_ prefix, a nominal class attribute in its own value order."""
    x, y = jets
    names = [f[2:] for f in FEATURES]
    lines = ["% hls4ml_lhc_jets_hlf", "@RELATION hls4ml_lhc_jets_hlf", ""]
    lines += [f"@ATTRIBUTE {n} NUMERIC" for n in names] + ["@ATTRIBUTE class {g,q,t,w,z}", "", "@DATA"]
    lines += [",".join([*(repr(float(v)) for v in row), CLASSES[c]]) for row, c in zip(x, y, strict=True)]
    path = tmp_path / "jets.arff"
    path.write_text("\n".join(lines) + "\n")
    check(read_jets(path), jets, "arff")


def test_csv_with_a_class_column_in_any_column_order(tmp_path, jets):
    x, y = jets
    header = ["class", *SHUFFLED]
    rows = [[CLASSES[c].upper(), *(repr(float(row[FEATURES.index(f)])) for f in SHUFFLED)] for row, c in zip(x, y, strict=True)]
    write_csv(tmp_path / "jets.csv", header, rows)
    check(read_jets(tmp_path / "jets.csv"), jets, "csv")


def test_gzipped_csv_with_one_hot_columns(tmp_path, jets):
    x, y = jets
    header = [*FEATURES, *(f"j_{c}" for c in CLASSES)]
    rows = [[*(repr(float(v)) for v in row), *(int(v) for v in hot)] for row, hot in zip(x, onehot(y), strict=True)]
    write_csv(tmp_path / "plain.csv", header, rows)
    (tmp_path / "jets.csv.gz").write_bytes(gzip.compress((tmp_path / "plain.csv").read_bytes()))
    check(read_jets(tmp_path / "jets.csv.gz"), jets, "csv")


def test_npy_plain_and_structured(tmp_path, jets):
    x, y = jets
    np.save(tmp_path / "plain.npy", np.hstack([x, onehot(y)]))
    check(read_jets(tmp_path / "plain.npy"), jets, "npy")
    fields = [(f, "<f4") for f in SHUFFLED] + [("class", "<i8")]
    table = np.zeros(N, dtype=fields)
    for f in FEATURES:
        table[f] = x[:, FEATURES.index(f)]
    table["class"] = y
    np.save(tmp_path / "structured.npy", table)
    check(read_jets(tmp_path / "structured.npy"), jets, "npy")


def test_npz_with_indices_or_one_hot(tmp_path, jets):
    x, y = jets
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    check(read_jets(tmp_path / "xy.npz"), jets, "npz")
    np.savez(tmp_path / "fl.npz", features=x, labels=onehot(y))
    check(read_jets(tmp_path / "fl.npz"), jets, "npz")


def test_hdf5_with_a_dataset_per_column(tmp_path, jets):
    x, y = jets
    with h5py.File(tmp_path / "cols.h5", "w") as h5:
        for f in SHUFFLED:
            h5[f] = x[:, FEATURES.index(f)]
        for i, c in enumerate(CLASSES):
            h5[f"j_{c}"] = onehot(y)[:, i]
    check(read_jets(tmp_path / "cols.h5"), jets, "hdf5")


def test_hdf5_of_the_hls4ml_jet_files(tmp_path, jets):
    """jetFeatures (n, k) named by jetFeatureNames, with extra columns, the one-hot labels among them and j_undef."""
    x, y = jets
    names = ["j_ptfrac", *SHUFFLED, "j_pt", *(f"j_{c}" for c in CLASSES), "j_undef"]
    table = np.zeros((N, len(names)), dtype=np.float32)
    for f in FEATURES:
        table[:, names.index(f)] = x[:, FEATURES.index(f)]
    table[:, [names.index(f"j_{c}") for c in CLASSES]] = onehot(y)
    with h5py.File(tmp_path / "jetImage_0.h5", "w") as h5:
        h5["jetFeatures"] = table
        h5["jetFeatureNames"] = np.array([n.encode() for n in names])
        h5["jetImage"] = np.zeros((N, 4, 4), dtype=np.float32)
    check(read_jets(tmp_path / "jetImage_0.h5"), jets, "hdf5")


def test_hdf5_with_unnamed_features_and_labels(tmp_path, jets):
    x, y = jets
    with h5py.File(tmp_path / "xy.hdf5", "w") as h5:
        h5["features"] = x
        h5["labels"] = onehot(y)
    check(read_jets(tmp_path / "xy.hdf5"), jets, "hdf5")
    with h5py.File(tmp_path / "named_labels.h5", "w") as h5:
        h5["x"] = x
        for i, c in enumerate(CLASSES):
            h5[f"j_{c}"] = onehot(y)[:, i]
    check(read_jets(tmp_path / "named_labels.h5"), jets, "hdf5")


# -------------------------------------------------------------------------------------- jet errors


def test_a_missing_feature_column_is_named_with_the_file(tmp_path, jets):
    x, y = jets
    header = [*FEATURES[:5], *FEATURES[6:], "class"]
    write_csv(tmp_path / "short.csv", header, [[*np.delete(row, 5), CLASSES[c]] for row, c in zip(x, y, strict=True)])
    with pytest.raises(DataFileError, match=rf"short\.csv lacks the feature column {FEATURES[5]}\b"):
        read_jets(tmp_path / "short.csv")


def test_missing_labels_are_named(tmp_path, jets):
    x, y = jets
    with h5py.File(tmp_path / "nolabel.h5", "w") as h5:
        for i, f in enumerate(FEATURES):
            h5[f] = x[:, i]
        for i, c in enumerate(CLASSES[:4]):
            h5[f"j_{c}"] = onehot(y)[:, i]
    with pytest.raises(DataFileError, match=r"nolabel\.h5 lacks the one-hot label column j_t"):
        read_jets(tmp_path / "nolabel.h5")
    write_csv(tmp_path / "nolabel.csv", FEATURES, x.tolist())
    with pytest.raises(DataFileError, match=r"nolabel\.csv lacks the labels: a 'class' column"):
        read_jets(tmp_path / "nolabel.csv")


def test_bad_labels_and_shapes_are_refused(tmp_path, jets):
    x, y = jets
    write_csv(tmp_path / "h.csv", [*FEATURES, "class"], [[*row, "higgs"] for row in x])
    with pytest.raises(DataFileError, match=r"unknown class 'higgs'; the classes are g, q, w, z, t"):
        read_jets(tmp_path / "h.csv")
    np.savez(tmp_path / "narrow.npz", x=x[:, :15], y=y)
    with pytest.raises(DataFileError, match=r"narrow\.npz: the features must be \(n, 16\).*got shape \(60, 15\)"):
        read_jets(tmp_path / "narrow.npz")
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(DataFileError, match=r"nolabels\.npz lacks the array y"):
        read_jets(tmp_path / "nolabels.npz")


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "jets.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataFileError, match="unknown jet file format"):
        read_jets(tmp_path / "jets.parquet")
    with pytest.raises(StageError, match=r"nothere\.csv does not exist"):
        read_jets(tmp_path / "nothere.csv")


# ------------------------------------------------------------------------------------- jets data set


def test_jets_data_set_from_a_file_is_real_and_subsampled_deterministically(tmp_path):
    x, y = synthetic_jets(1000, seed=5)
    np.savez(tmp_path / "jets.npz", x=x, y=y)
    spec = DatasetSpec(name="jets", path=str(tmp_path / "jets.npz"), max_samples=500, test_fraction=0.2, seed=7)
    data = load_dataset(spec)
    assert (len(data.x_train), len(data.x_test)) == (400, 100)
    assert data.shape == (16,) and data.features == FEATURES and data.simulation is None
    described = data.describe()
    assert described["path"] == str(tmp_path / "jets.npz") and described["format"] == "npz"
    assert described["simulated"] is False and described["source"] == f"{tmp_path / 'jets.npz'} (npz)"
    rows = {tuple(r) for r in x}
    assert all(tuple(r) in rows for r in data.x_train)  # rows of the file, unchanged
    again = load_dataset(spec)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_test, data.y_test)
    other = load_dataset(spec.model_copy(update={"seed": 8}))
    assert not np.array_equal(other.x_test, data.x_test)


def test_jets_without_a_file_are_simulated_and_say_so():
    """(From the suite's shared data-set cache: tests/conftest.py.)"""
    described = load_dataset(DatasetSpec(name="jets", samples=500)).describe()
    assert described["simulated"] is True and described["format"] == "simulated" and described["path"] is None
    assert described["source"] == "simulated with Pythia 8.317.2 and FastJet 3.5.2, no detector simulation"
    sim = described["simulation"]
    assert sim["classes"] == {label: 100 for label in CLASSES} and sim["ptWindowGeV"] == [800, 1200]
    assert sim["detector"] == "none" and sim["seed"] == 1


def test_digits_keep_their_image_shape():
    data = load_dataset(DatasetSpec(name="digits"))
    assert data.shape == (8, 8, 1) and data.x_train.shape[1:] == (8, 8, 1) and len(data.features) == 64
    assert data.features[9] == "pixel_1_1"


# ------------------------------------------------------------------------------------------------ idx


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder, n_train=60, n_test=20, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        raw = idx_bytes(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def test_idx_plain_and_gzipped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (60, 28, 28), dtype=np.uint8)
    (tmp_path / "a").write_bytes(idx_bytes(images))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), images)
    floats = np.linspace(-1, 1, 12).reshape(3, 4)
    raw = struct.pack(">BBBB", 0, 0, 0x0E, 2) + struct.pack(">2I", 3, 4) + floats.astype(">f8").tobytes()
    np.testing.assert_array_equal(readers.parse_idx(raw, "f8"), floats)


def test_idx_errors(tmp_path):
    raw = idx_bytes(np.zeros((60, 28, 28), dtype=np.uint8))
    (tmp_path / "magic").write_bytes(b"\x08\x03" + raw[2:])
    with pytest.raises(DataFileError, match=r"magic is not an idx file: bad magic number 0803"):
        read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(raw[:-100])
    with pytest.raises(DataFileError, match=r"short is truncated: 46956 bytes, expected 47056 for shape \(60, 28, 28\) of uint8"):
        read_idx(tmp_path / "short")
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw)[:-40])
    with pytest.raises(DataFileError, match=r"short\.gz is a damaged or truncated gzip file"):
        read_idx(tmp_path / "short.gz")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_folder_keeps_the_files_split(tmp_path, gz):
    written = write_mnist(tmp_path / "mnist", gz=gz)
    data = load_dataset(DatasetSpec(name="mnist", path=str(tmp_path / "mnist"), test_fraction=0.5))
    assert data.shape == (28, 28, 1) and data.x_train.shape == (60, 28, 28, 1) and data.x_test.shape == (20, 28, 28, 1)
    assert data.classes == tuple("0123456789") and len(data.features) == 784
    np.testing.assert_array_equal(data.x_test[..., 0], written["t10k-images-idx3-ubyte"])  # test part unshuffled
    np.testing.assert_array_equal(data.y_test, written["t10k-labels-idx1-ubyte"])
    order = [np.flatnonzero((written["train-images-idx3-ubyte"] == img[..., 0]).all(axis=(1, 2)))[0] for img in data.x_train]
    assert sorted(order) == list(range(60)) and order != list(range(60))  # all training images, shuffled by the seed
    np.testing.assert_array_equal(data.y_train, written["train-labels-idx1-ubyte"][order])
    described = data.describe()
    assert described["format"] == "idx" and "testFraction does not apply" in described["split"]


def test_fashion_mnist_names_and_max_samples(tmp_path):
    write_mnist(tmp_path / "fashion", n_train=150, n_test=50, gz=True)
    data = load_dataset(DatasetSpec(name="fashion-mnist", path=str(tmp_path / "fashion"), max_samples=100))
    assert data.classes == FASHION_MNIST_CLASSES and data.classes[9] == "Ankle boot"
    assert (len(data.x_train), len(data.x_test)) == (75, 25)  # in proportion to the files' parts


def test_mnist_without_its_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match=r"empty lacks train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                            r"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        load_dataset(DatasetSpec(name="mnist", path=str(tmp_path / "empty")))
    with pytest.raises(DataFileError, match=r"nowhere is not a folder"):
        load_dataset(DatasetSpec(name="mnist", path=str(tmp_path / "nowhere")))
    write_mnist(tmp_path / "mismatch", n_train=60)
    (tmp_path / "mismatch" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(59, dtype=np.uint8)))
    with pytest.raises(DataFileError, match=r"has 60 images but .*train-labels-idx1-ubyte has 59 labels"):
        load_dataset(DatasetSpec(name="mnist", path=str(tmp_path / "mismatch")))
