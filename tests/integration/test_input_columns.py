"""A model of two inputs, sent in bulk as columns (``{"a": rows, "b": rows}``), end to end:
a real two-input ``.tflite``, a real worker, a private Redis.

Each row's outputs must equal LiteRT's own for the same row (so no input is dropped,
swapped with the other or shifted by a row on the way), and each row must be the job a
single ``submit`` of that row names (the same id, so the same cache entry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ops.local.redis_server import LocalRedis
from producers.async_client import AsyncClient
from producers.client import Client
from tasks.errors import BadInput
from tasks.settings import Settings
from tests.conftest import WorkerProcess, started_worker
from tests.helpers.litert_reference import litert_outputs
from tests.helpers.two_inputs import build_two_inputs, two_inputs_info
from workers.models.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A models folder holding only ``two:fp32``, and the model file itself."""
    pytest.importorskip("tensorflow", reason="building the two-input model needs tensorflow")
    folder = tmp_path_factory.mktemp("two-models")
    built = build_two_inputs(tmp_path_factory.mktemp("two-build") / "two.tflite")
    entry = Registry(folder).write(two_inputs_info(version="", max_batch_size=16), built)
    return folder, entry.path


@pytest.fixture(scope="module")
def col_settings(two_model: tuple[Path, Path]) -> Iterator[Settings]:
    with LocalRedis() as server:
        yield Settings(broker_url=server.url, models_dir=two_model[0], log_level="INFO")


@pytest.fixture(scope="module")
def worker(col_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = started_worker(col_settings, ["two:fp32"], tmp_path_factory.mktemp("two-w") / "worker.log")
    yield w
    w.stop()


def rows(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(n, 3)).astype(np.float32), "b": rng.normal(size=(n, 2)).astype(np.float32)}


def test_columns_of_two_inputs_come_back_as_litert_computes_each_row(
    col_settings: Settings, worker: WorkerProcess, two_model: tuple[Path, Path]
):
    cols = rows(40, 1)
    want = litert_outputs(two_model[1], cols)
    with Client(col_settings) as client:
        got = client.infer_many("two", cols, variant="fp32", chunk_size=16, timeout=60)
        got.raise_for_errors()
        for name in ("y", "s"):
            np.testing.assert_allclose(got.outputs[name], want[name], rtol=1e-5, atol=1e-6)
        # Row 7 is the job a single submit of row 7 names: its cached result, the same numbers.
        one = client.submit("two", {"a": cols["a"][7], "b": cols["b"][7]}, variant="fp32", timeout=10)
        assert one.id == got.job_ids[7] and one.cached
        np.testing.assert_array_equal(one.wait(10).outputs["y"], got.outputs["y"][7])
        # submit_many takes the same columns; a column one row short is refused, naming it.
        jobs = client.submit_many("two", cols, variant="fp32", timeout=10)
        assert [j.id for j in jobs] == got.job_ids and all(j.cached for j in jobs)
        with pytest.raises(BadInput, match="input 'b': 39 rows, but input 'a' has 40"):
            client.submit_many("two", {"a": cols["a"], "b": cols["b"][:39]}, variant="fp32")


def test_the_async_client_sends_columns_and_keeps_only_the_outputs_asked_for(
    col_settings: Settings, worker: WorkerProcess, two_model: tuple[Path, Path]
):
    cols = rows(24, 2)
    want = litert_outputs(two_model[1], cols)

    async def run() -> None:
        async with AsyncClient(col_settings) as client:
            got = await client.infer_many("two", cols, variant="fp32", outputs=["s"], timeout=60)
            got.raise_for_errors()
            assert set(got.outputs) == {"s"}
            np.testing.assert_allclose(got.outputs["s"], want["s"], rtol=1e-5, atol=1e-6)
            with pytest.raises(BadInput, match=r"outputs: expected some of \['y', 's'\]"):
                await client.infer_many("two", cols, variant="fp32", outputs=["probs"], timeout=10)

    asyncio.run(run())
