"""Readers of data files: the hls4ml jet data set in the forms in circulation, and idx image files.

Every reader returns plain arrays. Jets come back as ``x`` float32 (n, 16) with the columns in the order
of ``jets.FEATURES`` and ``y`` int64 (n,) indexing ``jets.CLASSES``, whatever order the file keeps them
in. Where a format names its columns (ARFF, CSV, structured .npy, HDF5) they are found by name: the
names of ``jets.FEATURES`` with or without their ``j_`` prefix (OpenML drops it), case-insensitive.
Labels are a ``class`` column of names (g, q, w, z, t) or indices, or one-hot columns named after the
classes (``j_g`` ... ``j_t`` or ``g`` ... ``t``). A file that lacks a column raises
:class:`DataFileError` naming the column and the file.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from fpgaflow.errors import StageError
from fpgaflow_trainer.jets import CLASSES, FEATURES

JET_FORMATS = {".arff": "arff", ".csv": "csv", ".npy": "npy", ".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5"}
LABEL_COLUMNS = ("class", "label", "labels", "target", "y")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataFileError(StageError):
    """A data file that is missing, unreadable or lacks what the data set needs; names the file."""

    reason = "InvalidDataFile"


# ---------------------------------------------------------------------------------------------- jets


def jet_format(path: str | Path) -> str:
    """The format of a jet file from its suffix (a trailing .gz is allowed for ARFF and CSV)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 and suffixes[-2] in (".arff", ".csv"):
        return JET_FORMATS[suffixes[-2]]
    if suffixes and suffixes[-1] in JET_FORMATS:
        return JET_FORMATS[suffixes[-1]]
    raise DataFileError(f"{path}: unknown jet file format; use one of {', '.join(sorted(JET_FORMATS))} (ARFF and CSV may be .gz)")


def read_jets(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read jets from ``path``: (x, y, format name)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"jet data file {path} does not exist (dataset.path is read where the trainer runs)")
    fmt = jet_format(path)
    reader: Callable[[Path], tuple[np.ndarray, np.ndarray]] = {
        "arff": read_jets_arff, "csv": read_jets_csv, "npy": read_jets_npy, "npz": read_jets_npz, "hdf5": read_jets_hdf5,
    }[fmt]
    x, y = reader(path)
    return x, y, fmt


def _key(name: str) -> str:
    """Column names as compared: lower case, without a leading ``j_``."""
    name = name.strip().strip("'\"").lower()
    return name[2:] if name.startswith("j_") else name


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 - the caller closes it


def labels_from_names(values: np.ndarray, source: str) -> np.ndarray:
    """Class names (str or bytes, any case) or integer indices to indices into ``CLASSES``."""
    values = np.asarray(values)
    if values.dtype.kind in "iu" or (values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0)):
        y = values.astype(np.int64)
        bad = y[(y < 0) | (y >= len(CLASSES))]
        if bad.size:
            raise DataFileError(f"{source}: class index {bad[0]} is outside 0..{len(CLASSES) - 1} ({', '.join(CLASSES)})")
        return y
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()]
    index = {c: i for i, c in enumerate(CLASSES)}
    keys = [_key(n) for n in names]
    unknown = sorted({n for n, k in zip(names, keys, strict=True) if k not in index})
    if unknown:
        raise DataFileError(f"{source}: unknown class {unknown[0]!r}; the classes are {', '.join(CLASSES)}")
    return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))


def labels_from_one_hot(onehot: np.ndarray, source: str) -> np.ndarray:
    """Rows of one-hot (or score) columns in ``CLASSES`` order to class indices; every row needs a class."""
    onehot = np.asarray(onehot, dtype=np.float64)
    empty = int(np.count_nonzero(onehot.max(axis=1) <= 0))
    if empty:
        raise DataFileError(f"{source}: {empty} rows have none of the one-hot labels {', '.join(CLASSES)} set")
    return onehot.argmax(axis=1).astype(np.int64)


def jets_from_columns(columns: Mapping[str, Callable[[], np.ndarray]], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Jets from named columns (name -> function returning the 1-D column), found by name."""
    by_key = {}
    for name in columns:
        by_key.setdefault(_key(name), name)
    missing = [f for f in FEATURES if _key(f) not in by_key]
    if missing:
        raise DataFileError(f"{source} lacks the feature column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                            f"(it has {', '.join(list(columns)[:30])})")
    x = np.column_stack([np.asarray(columns[by_key[_key(f)]](), dtype=np.float32) for f in FEATURES])
    hot = [c for c in CLASSES if c in by_key]
    if hot:
        if len(hot) < len(CLASSES):
            lacking = [f"j_{c}" for c in CLASSES if c not in by_key]
            raise DataFileError(f"{source} lacks the one-hot label column{'s' if len(lacking) > 1 else ''} {', '.join(lacking)}")
        y = labels_from_one_hot(np.column_stack([columns[by_key[c]]() for c in CLASSES]), source)
    else:
        label = next((by_key[k] for k in LABEL_COLUMNS if k in by_key), None)
        if label is None:
            raise DataFileError(f"{source} lacks the labels: a 'class' column, or one-hot columns "
                                f"{', '.join('j_' + c for c in CLASSES)}")
        y = labels_from_names(columns[label](), source)
    return x, y


def jets_from_arrays(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Jets from unnamed arrays: ``x`` (n, 16) in ``FEATURES`` order, ``y`` indices (n,) or one-hot (n, 5)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        raise DataFileError(f"{source}: the features must be (n, {len(FEATURES)}) in the order {', '.join(FEATURES)}, "
                            f"got shape {x.shape}")
    if y.ndim == 2 and y.shape[1] == len(CLASSES):
        labels = labels_from_one_hot(y, source)
    elif y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        labels = labels_from_names(y.ravel(), source)
    else:
        raise DataFileError(f"{source}: the labels must be class indices (n,) or one-hot (n, {len(CLASSES)}), got shape {y.shape}")
    if len(labels) != len(x):
        raise DataFileError(f"{source}: {len(x)} feature rows but {len(labels)} labels")
    return x.astype(np.float32), labels


def read_jets_arff(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """OpenML's ARFF of hls4ml_lhc_jets_hlf: numeric feature attributes and a nominal ``class``."""
    from scipy.io import arff

    try:
        with _open_text(path) as f:
            data, _ = arff.loadarff(f)
    except (ValueError, arff.ArffError, UnicodeDecodeError, OSError) as exc:
        raise DataFileError(f"{path} is not a readable ARFF file: {exc}") from exc
    return jets_from_columns({name: (lambda n=name: data[n]) for name in data.dtype.names}, str(path))


def read_jets_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """CSV with a header row: the feature columns and a ``class`` column or one-hot class columns."""
    with _open_text(path) as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header:
            raise DataFileError(f"{path} is empty: a CSV of jets needs a header row naming the columns")
        body = [row for row in rows if row]
    if any(len(row) != len(header) for row in body):
        bad = next(i for i, row in enumerate(body) if len(row) != len(header))
        raise DataFileError(f"{path}: line {bad + 2} has {len(body[bad])} fields, the header {len(header)}")
    table = np.array(body, dtype=object).reshape(len(body), len(header))

    def column(i: int) -> Callable[[], np.ndarray]:
        def get() -> np.ndarray:
            values = table[:, i].astype(str)
            try:
                return values.astype(np.float64)
            except ValueError:
                return values

        return get

    return jets_from_columns({name.strip(): column(i) for i, name in enumerate(header)}, str(path))


def read_jets_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """.npy: a structured array with named fields, or 2-D with 16 feature columns then 5 one-hot columns
    (or one column of class indices)."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataFileError(f"{path} is not a readable .npy file: {exc}") from exc
    if array.dtype.names:
        return jets_from_columns({n: (lambda n=n: array[n]) for n in array.dtype.names}, str(path))
    n = len(FEATURES)
    if array.ndim != 2 or array.shape[1] not in (n + 1, n + len(CLASSES)):
        raise DataFileError(f"{path}: a plain .npy must be (rows, {n + len(CLASSES)}): the {n} features then "
                            f"{len(CLASSES)} one-hot labels (or {n + 1} with class indices), got shape {array.shape}")
    return jets_from_arrays(array[:, :n], array[:, n:], str(path))


def read_jets_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """.npz with arrays x and y (or X/Y, features/labels); y holds class indices or one-hot rows.
    An optional ``feature_names`` array gives the columns of x, which are then found by name."""
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        xk = next((k for k in ("x", "X", "features") if k in keys), None)
        yk = next((k for k in ("y", "Y", "labels") if k in keys), None)
        if xk is None or yk is None:
            need = "x" if xk is None else "y"
            raise DataFileError(f"{path} lacks the array {need} (or {'X/features' if need == 'x' else 'Y/labels'}); "
                                f"it has {', '.join(sorted(keys))}")
        x, y = npz[xk], npz[yk]
        names = [str(n) for n in npz["feature_names"]] if "feature_names" in keys else None
    if names is not None:
        if x.ndim != 2 or x.shape[1] != len(names):
            raise DataFileError(f"{path}: feature_names has {len(names)} names but {xk} has shape {x.shape}")
        missing = [f for f in FEATURES if _key(f) not in {_key(n) for n in names}]
        if missing:
            raise DataFileError(f"{path} lacks the feature column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        order = {_key(n): i for i, n in reversed(list(enumerate(names)))}
        x = x[:, [order[_key(f)] for f in FEATURES]]
    return jets_from_arrays(x, y, str(path))


def _hdf5_columns(h5) -> dict[str, Callable[[], np.ndarray]]:
    """Named columns of an HDF5 file: 1-D datasets, fields of compound datasets, and the columns of a 2-D
    dataset whose names are in a sibling ``<name>Names`` dataset (the hls4ml jet files' jetFeatures and
    jetFeatureNames) or in its ``names``/``columns`` attribute."""
    import h5py

    columns: dict[str, Callable[[], np.ndarray]] = {}
    datasets: dict[str, h5py.Dataset] = {}

    def collect(name: str, obj) -> None:  # visititems stops at the first callback that returns something
        if isinstance(obj, h5py.Dataset):
            datasets[name] = obj

    h5.visititems(collect)
    for name, ds in datasets.items():
        leaf = name.rsplit("/", 1)[-1]
        if ds.dtype.names:
            for field in ds.dtype.names:
                columns.setdefault(field, lambda ds=ds, field=field: ds[field])
        elif ds.ndim == 1 and ds.dtype.kind in "iufbSO":
            columns.setdefault(leaf, lambda ds=ds: ds[()])
        elif ds.ndim == 2:
            names = None
            for sibling in (f"{name}Names", f"{name[:-1]}Names" if name.endswith("s") else None, f"{name}_names"):
                if sibling in datasets and datasets[sibling].shape == (ds.shape[1],):
                    names = datasets[sibling][()]
            for attr in ("names", "columns", "feature_names"):
                if names is None and attr in ds.attrs and len(ds.attrs[attr]) == ds.shape[1]:
                    names = ds.attrs[attr]
            if names is not None:
                for i, col in enumerate(names):
                    col = col.decode() if isinstance(col, bytes) else str(col)
                    columns.setdefault(col, lambda ds=ds, i=i: ds[:, i])
    return columns


def read_jets_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """HDF5: columns found by name (see ``_hdf5_columns``), else a 2-D ``features``/``x``/``X`` dataset with the
    16 features in ``FEATURES`` order and ``labels``/``y``/``Y`` (indices or one-hot) or one-hot j_g ... j_t."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"{path} is not a readable HDF5 file: {exc}") from exc
    with h5:
        columns = _hdf5_columns(h5)
        keys = {_key(c) for c in columns}
        if all(_key(f) in keys for f in FEATURES):
            return jets_from_columns(columns, str(path))
        xk = next((k for k in ("features", "x", "X") if k in h5 and getattr(h5[k], "ndim", 0) == 2), None)
        if xk is None:
            missing = [f for f in FEATURES if _key(f) not in keys]
            raise DataFileError(f"{path} lacks the feature column{'s' if len(missing) > 1 else ''} {', '.join(missing)}, "
                                f"and has no 2-D dataset features or x of the {len(FEATURES)} features")
        yk = next((k for k in ("labels", "y", "Y") if k in h5), None)
        if yk is not None:
            return jets_from_arrays(h5[xk][()], h5[yk][()], str(path))
        lacking = [f"j_{c}" for c in CLASSES if c not in keys]
        if lacking:
            raise DataFileError(f"{path} lacks the labels: a dataset labels or y, or the one-hot column"
                                f"{'s' if len(lacking) > 1 else ''} {', '.join(lacking)}")
        by_key = {_key(c): c for c in reversed(list(columns))}
        onehot = np.column_stack([columns[by_key[c]]() for c in CLASSES])
        return jets_from_arrays(h5[xk][()], onehot, str(path))


# ----------------------------------------------------------------------------------------------- idx


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """An idx array (the MNIST format): 2 zero bytes, a dtype code, the number of dimensions, each dimension as a
    big-endian uint32, then the data. Checks the magic number and that the data has exactly the declared size."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataFileError(f"{source} is not an idx file: bad magic number {raw[:4].hex() or '(empty)'} "
                            f"(expected 0000, a type code in {', '.join(f'{c:02x}' for c in IDX_DTYPES)}, dimensions)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{source} is truncated: {len(raw)} bytes, shorter than its {ndim}-dimension header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataFileError(f"{source} is {what}: {len(raw)} bytes, expected {expected} for shape {dims} of {dtype.name}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file, gzip-compressed or not (recognised by its content, not its name)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataFileError(f"{path} is a damaged or truncated gzip file: {exc}") from exc
    return parse_idx(raw, str(path))


def find_mnist_files(folder: str | Path) -> dict[str, Path]:
    """The four idx files of an MNIST-like folder, each plain or .gz (``-idx`` or ``.idx`` in the name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileError(f"{folder} is not a folder: dataset.path names the folder of the four idx files "
                            f"{', '.join(MNIST_FILES.values())} (each may be .gz)")
    found, missing = {}, []
    for role, name in MNIST_FILES.items():
        candidates = [folder / f"{stem}{gz}" for stem in (name, name.replace("-idx", ".idx")) for gz in ("", ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found[role] = hit
    if missing:
        raise DataFileError(f"{folder} lacks {', '.join(missing)} (plain or .gz)")
    return found


def read_mnist(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of an MNIST-like folder: uint8 images (n, rows, cols), int64 labels."""
    files = find_mnist_files(folder)
    arrays = {role: read_idx(p) for role, p in files.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3:
            raise DataFileError(f"{files[f'{part}_images']}: images must have 3 dimensions (n, rows, cols), got {images.shape}")
        if labels.ndim != 1:
            raise DataFileError(f"{files[f'{part}_labels']}: labels must have 1 dimension, got {labels.shape}")
        if len(images) != len(labels):
            raise DataFileError(f"{files[f'{part}_images']} has {len(images)} images but "
                                f"{files[f'{part}_labels']} has {len(labels)} labels")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataFileError(f"{folder}: train images are {arrays['train_images'].shape[1:]}, "
                            f"test images {arrays['test_images'].shape[1:]}")
    return (arrays["train_images"], arrays["train_labels"].astype(np.int64),
            arrays["test_images"], arrays["test_labels"].astype(np.int64))
