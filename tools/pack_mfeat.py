"""Pack the UCI Multiple Features CSVs into the compact archive shipped inside ``dus_env``.

Why a packed copy: the package must work with no files to prepare, and six CSVs (5.3 MB of text)
compress to a fraction of that as typed arrays. Integer-valued views keep integer dtypes so
nothing is rounded. Run from the repository root::

    python tools/pack_mfeat.py ../shared/data/uci-mfeat dus_env/data/mfeat.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")


def load_view(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    features, labels = table[:, :-1], table[:, -1].astype(np.int64)
    if np.all(features == np.round(features)) and np.abs(features).max() < 2**15:
        dtype = np.uint8 if features.min() >= 0 and features.max() < 256 else np.int16
        return features.astype(dtype), labels
    return features.astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder holding mfeat-<view>.csv")
    parser.add_argument("target", type=Path, help="output .npz")
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {}
    labels = None
    for view in VIEWS:
        features, view_labels = load_view(args.source / f"mfeat-{view}.csv")
        if labels is not None and not np.array_equal(labels, view_labels):
            raise SystemExit(f"labels of view {view!r} differ from the first view's: rows are not aligned")
        labels = view_labels
        arrays[view] = features
    assert labels is not None
    # Any: numpy's stub types **kwds beside the keyword allow_pickle: bool, which a dict[str, ndarray] cannot match.
    payload: dict[str, Any] = {"labels": labels.astype(np.uint8), **arrays}
    np.savez_compressed(args.target, **payload)
    print(
        f"wrote {args.target} ({args.target.stat().st_size / 1e6:.2f} MB): "
        + ", ".join(f"{v} {a.shape[1]}x{a.dtype}" for v, a in arrays.items())
    )


if __name__ == "__main__":
    main()
