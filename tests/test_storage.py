"""Streamed writers: a file appears complete, or not at all."""

import os

import numpy as np
import pyarrow as pa
import pytest

from diffrep import storage
from diffrep.storage import TMP_MARKER

SCHEMA = pa.schema([("id", pa.int64()), ("key", pa.string())])


def test_parquet_writer_streams_row_groups_and_appears_only_when_complete(tmp_path):
    url = str(tmp_path / "out.parquet")
    with pytest.raises(RuntimeError, match="killed"), storage.parquet_writer(url, SCHEMA) as writer:
        writer.write_table(pa.table({"id": [1, 2], "key": ["a", "b"]}, schema=SCHEMA))
        raise RuntimeError("killed mid-file")
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary
    with storage.parquet_writer(url, SCHEMA) as writer:
        for start in range(0, 10, 4):
            ids = list(range(start, min(start + 4, 10)))
            writer.write_table(pa.table({"id": ids, "key": [str(i) for i in ids]}, schema=SCHEMA),
                               row_group_size=3)
    table = storage.read_table(url)
    assert table["id"].to_pylist() == list(range(10))
    assert storage.pq.ParquetFile(url).metadata.num_row_groups == 5  # 3+1, 3+1, 2
    assert not [f for f in os.listdir(tmp_path) if TMP_MARKER in f]


def test_write_npy_round_trips_and_refuses_objects(tmp_path):
    url = str(tmp_path / "a.npy")
    array = np.arange(12, dtype=np.int32).reshape(4, 3)
    storage.write_npy(url, array)
    assert np.array_equal(np.load(url, allow_pickle=False), array)
    with pytest.raises(TypeError, match="object array"):
        storage.write_npy(str(tmp_path / "b.npy"), np.array([{"a": 1}], dtype=object))
    assert sorted(os.listdir(tmp_path)) == ["a.npy"]
