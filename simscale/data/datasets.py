"""TFDS builders writing array_record (no TensorFlow): a text corpus and packed token rows.

Both are read back as TFDS data sources (random access, the object `tfds.data_source` returns).
`build(kind, data_dir, splits, length)` writes one dataset; `source(kind, data_dir, split)` opens it.
"""
from __future__ import annotations

import pathlib
from typing import Callable, Iterable

import numpy as np
import tensorflow_datasets as tfds

_VERSION = tfds.core.Version("1.0.0")


class _Quiet:
    """Builder settings: no checksum files beside the code (and no importlib_resources), no prints."""

    VERSION = _VERSION
    code_path = None

    def _log_download_bytes(self):
        pass

    def _log_download_done(self):
        pass


class SimscaleText(_Quiet, tfds.core.GeneratorBasedBuilder):
    """Documents (`text`), with train and validation splits."""

    def __init__(self, *, splits: dict[str, Callable[[], Iterable]] | None = None, **kwargs):
        self._splits = splits or {}
        super().__init__(file_format="array_record", **kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text()}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(fn) for name, fn in self._splits.items()}

    def _generate_examples(self, fn):
        for i, text in enumerate(fn()):
            yield i, {"text": text}


class SimscaleTokens(_Quiet, tfds.core.GeneratorBasedBuilder):
    """Packed int32 token rows of `length` (= seq_len + 1), documents delimited by <s> ... </s>."""

    def __init__(self, *, length: int = 129, splits: dict[str, Callable[[], Iterable]] | None = None,
                 **kwargs):
        self._length, self._splits = length, splits or {}
        super().__init__(file_format="array_record", **kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"tokens": tfds.features.Tensor(shape=(self._length,), dtype=np.int32)}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(fn) for name, fn in self._splits.items()}

    def _generate_examples(self, fn):
        for i, row in enumerate(fn()):
            yield i, {"tokens": row}


_BUILDERS = {"text": SimscaleText, "tokens": SimscaleTokens}


def build(kind: str, data_dir, splits: dict[str, Callable[[], Iterable]], **kwargs) -> None:
    """Write dataset `kind` ('text' or 'tokens') under data_dir from per-split generator functions."""
    tfds.disable_progress_bar()  # prepare shows its own progress
    builder = _BUILDERS[kind](data_dir=str(data_dir), splits=splits, **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))


def source(kind: str, data_dir, split: str):
    """Random-access records ({'text': bytes} or {'tokens': int32 array}) of one split."""
    path = pathlib.Path(data_dir) / _BUILDERS[kind].name / str(_VERSION)
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"no {kind} dataset in {data_dir}")
    # From the directory: features (e.g. the row length) come from features.json, not the class.
    return tfds.builder_from_directory(str(path)).as_data_source(split=split)
