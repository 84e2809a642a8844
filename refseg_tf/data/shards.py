"""Shard integrity: finding a split's shard files and checking them against metadata.json.

`find_shards` lists a split's shards and checks the set is complete; `verify_split` compares
each shard's size, record count and CRC-32 with what the conversion wrote. The input pipeline
(`refseg_tf.data.pipeline.load`) and the trainer call both before reading any record.
"""

import json
import os
import re
from typing import Optional

import tensorflow as tf

from absl import logging

from refseg_tf.data import schema

_RECONVERT = "re-run refseg-convert with the same flags (it resumes and rewrites only what is damaged)"


class DamagedDataError(ValueError):
    """A converted split is incomplete or damaged: a shard missing, cut short or changed."""


_SHARD_NAME = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def available_splits(data_dir) -> list:
    """Names of the splits that have shard files in `data_dir` (sorted)."""
    names = tf.io.gfile.listdir(data_dir) if tf.io.gfile.isdir(data_dir) else []
    matches = (_SHARD_NAME.match(os.path.basename(name.rstrip("/"))) for name in names)
    return sorted({match.group("split") for match in matches if match})


def find_shards(data_dir, split: str) -> list:
    """The sorted shard paths of `split`; errors name the directory and list the existing splits.

    Raises:
        FileNotFoundError: the directory or the split's shards do not exist.
        ValueError: some of the split's shards are missing (an interrupted conversion).
    """
    data_dir = os.fspath(data_dir)
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(f"Data directory {data_dir!r} does not exist.")
    pattern = os.path.join(data_dir, schema.SHARD_GLOB.format(split=split))
    paths = [path for path in sorted(tf.io.gfile.glob(pattern)) if _shard_split(path) == split]
    if not paths:
        splits = available_splits(data_dir)
        raise FileNotFoundError(
            f"No shards of split {split!r} ({schema.SHARD_GLOB.format(split=split)}) in "
            f"{data_dir!r}; splits found there: {splits if splits else 'none'}."
        )
    _check_shard_set(paths, data_dir, split)
    return paths


def _shard_split(path: str) -> Optional[str]:
    match = _SHARD_NAME.match(os.path.basename(path))
    return match.group("split") if match else None


def _check_shard_set(paths: list, data_dir: str, split: str) -> None:
    counts = {int(_SHARD_NAME.match(os.path.basename(p)).group("count")) for p in paths}
    if len(counts) != 1:
        raise ValueError(
            f"Split {split!r} in {data_dir!r} mixes shard sets of different sizes {sorted(counts)}."
        )
    (count,) = counts
    present = {int(_SHARD_NAME.match(os.path.basename(p)).group("index")) for p in paths}
    missing = sorted(set(range(count)) - present)
    if missing:
        names = [schema.SHARD_PATTERN.format(split=split, index=i, count=count) for i in missing]
        raise ValueError(
            f"Split {split!r} in {data_dir!r} is incomplete: {len(missing)} of {count} shards "
            f"are missing ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})."
        )


def verify_split(data_dir, split: str, paths: list, checksum: bool = True) -> None:
    """Checks the shards of `split` against what the conversion wrote into metadata.json.

    For every shard: it is listed, and its size, record count and (with `checksum`) CRC-32
    equal the values of metadata.json `shard_files`, so a zero-byte shard, one cut at or
    inside a record, or one with flipped bytes is found before any record is read. Reading
    the record headers costs a few reads per image; the CRC-32 reads each file once (several
    GB/s). A directory without metadata.json that the writer left (it has `.shards/`) is an
    unfinished conversion; one written by other means (no `.shards/`) is read unchecked.

    Raises:
        DamagedDataError: naming the shard, what differs and what to do.
    """
    data_dir = os.fspath(data_dir)
    metadata = _read_metadata(data_dir)
    if metadata is None:
        return
    entry = metadata.get("splits", {}).get(split)
    if entry is None:
        raise DamagedDataError(
            f"{os.path.join(data_dir, schema.METADATA_FILENAME)} does not list the split "
            f"{split!r} whose shards are in {data_dir!r}: shards of another conversion; {_RECONVERT}."
        )
    expected = entry.get("shard_files")
    if expected is None:  # written before shard_files existed: the total size only
        _check_total_size(data_dir, split, paths, entry)
        return
    found = {os.path.basename(path): path for path in paths}
    unexpected = sorted(set(found) - set(expected)) + sorted(set(expected) - set(found))
    if unexpected:
        raise DamagedDataError(
            f"Split {split!r} in {data_dir!r}: shards {unexpected} differ from the list in "
            f"metadata.json; {_RECONVERT}."
        )
    for name, path in sorted(found.items()):
        _check_shard(path, expected[name], checksum)


def _read_metadata(data_dir: str):
    path = os.path.join(data_dir, schema.METADATA_FILENAME)
    if not tf.io.gfile.exists(path):
        if tf.io.gfile.isdir(os.path.join(data_dir, ".shards")):
            raise DamagedDataError(
                f"{data_dir!r} has no {schema.METADATA_FILENAME}: its conversion did not finish; "
                f"{_RECONVERT}."
            )
        logging.warning("%s has no %s: its shards are read unchecked.", data_dir, path)
        return None
    try:
        with tf.io.gfile.GFile(path, "r") as file:
            metadata = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise DamagedDataError(f"{path} is not valid JSON ({error}); {_RECONVERT}.") from error
    if not isinstance(metadata, dict):
        raise DamagedDataError(f"{path} must hold a JSON object; {_RECONVERT}.")
    return metadata


def _check_total_size(data_dir, split, paths, entry) -> None:
    total = sum(tf.io.gfile.stat(path).length for path in paths)
    if "bytes" in entry and total != entry["bytes"]:
        raise DamagedDataError(
            f"Split {split!r} in {data_dir!r}: its shards hold {total} bytes, metadata.json "
            f"says {entry['bytes']}; {_RECONVERT}."
        )


def _check_shard(path: str, expected: dict, checksum: bool) -> None:
    if "://" in path:  # a remote file system: the size only
        size = tf.io.gfile.stat(path).length
        if size != expected["bytes"]:
            raise DamagedDataError(
                f"Shard {path} has {size} bytes, metadata.json says {expected['bytes']}; "
                f"{_RECONVERT}."
            )
        return
    scan = schema.scan_shard(path, checksum=checksum)
    problems = []
    if scan.bytes != expected["bytes"]:
        problems.append(f"{scan.bytes} bytes instead of {expected['bytes']}")
    if scan.problem is not None:
        problems.append(scan.problem)
    if scan.records != expected["images"]:
        problems.append(f"{scan.records} records instead of {expected['images']}")
    if checksum and not problems and scan.crc32 != expected["crc32"]:
        problems.append("its CRC-32 differs from the one written at conversion (damaged bytes)")
    if problems:
        raise DamagedDataError(f"Shard {path} is damaged: {'; '.join(problems)}; {_RECONVERT}.")
