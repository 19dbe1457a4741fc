"""``prune`` and ``distill`` on the digits example: real Keras training, real LiteRT
files, a real worker serving the results under the model's own name.

The module trains twice (a 4-epoch fine-tune and a 40-epoch distillation on 1,437
digits, tens of seconds on two cores) and shares both results among its tests; it
works in a models folder of its own, so the session's models are never changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.settings import Settings
from tests.conftest import on_db, started_worker
from tests.helpers.cli import inferq, one_line_error
from workers.models.examples import KERAS_SOURCE_FILE
from workers.models.optimize.distill import DistillOptions, DistillReport, distill
from workers.models.optimize.prune import PruneOptions, PruneReport, prune
from workers.models.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A database of the session's Redis for this module alone: its worker announces
#: digits variants from another models folder than the other modules' workers.
DB = 6


@pytest.fixture(scope="module")
def own_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding digits with its Keras source and training split: copied
    from the session's when it has them (its data and the variants the tests read, not
    variants made since), built here when it predates them."""
    out = tmp_path_factory.mktemp("optimize") / "models"
    src = models_dir / "digits"
    if (src / "data" / KERAS_SOURCE_FILE).is_file() and (src / "data" / "train_x.npy").is_file():
        for part in ("data", "fp32", "savedmodel"):
            shutil.copytree(src / part, out / "digits" / part)
    else:
        from workers.models.examples import build_digits

        build_digits(Registry(out))
    return out


def _data(models: Path) -> Path:
    return models / "digits" / "data"


@pytest.fixture(scope="module")
def pruned(own_models: Path) -> PruneReport:
    data = _data(own_models)
    return prune(
        Registry(own_models),
        "digits",
        PruneOptions(sparsity=0.5),
        fine_tune=data / "train_x.npy",
        labels=data / "train_y.npy",
    )


@pytest.fixture(scope="module")
def distilled(own_models: Path) -> DistillReport:
    data = _data(own_models)
    return distill(
        Registry(own_models),
        "digits",
        "tiny",
        data / "train_x.npy",
        DistillOptions(),
        labels=data / "train_y.npy",
    )


def kernel_zeros(path: Path) -> tuple[int, int]:
    """Zeros and weights in a .tflite file's float kernels, read with LiteRT's own
    flatbuffer schema (not the code under test)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    zeros = total = 0
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
        if isinstance(raw, int) or t.Type() != schema.TensorType.FLOAT32 or t.ShapeLength() < 2:
            continue
        w = np.frombuffer(raw.tobytes(), dtype="<f4")
        zeros += int((w == 0).sum())
        total += w.size
    return zeros, total


def direct_top1(path: Path, x: np.ndarray) -> np.ndarray:
    """Classes from LiteRT's signature runner by the names clients use (image -> probs)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return np.array([runner(image=xi[None])["probs"][0].argmax() for xi in x])


def test_prune_reaches_the_asked_sparsity_in_the_exported_weights(
    pruned: PruneReport, own_models: Path
) -> None:
    zeros, total = kernel_zeros(Registry(own_models).get("digits", "pruned50").path)
    assert zeros / total == pytest.approx(0.5, abs=0.005)
    assert (pruned.file_zeros, pruned.file_weights) == (zeros, total)
    assert all(share == pytest.approx(0.5, abs=0.001) for share in pruned.layers.values())


def test_half_pruned_digits_loses_at_most_one_point_of_accuracy(
    pruned: PruneReport, own_models: Path
) -> None:
    assert pruned.accuracy_dense is not None and pruned.accuracy_pruned is not None
    assert pruned.accuracy_pruned >= pruned.accuracy_dense - 0.01
    data = _data(own_models)
    x, y = np.load(data / "heldout_x.npy"), np.load(data / "heldout_y.npy")
    own = (direct_top1(Registry(own_models).get("digits", "pruned50").path, x) == y).mean()
    assert own == pytest.approx(pruned.accuracy_pruned, abs=0.003)  # the report is the served file's


def test_half_pruned_tflite_gzips_to_at_most_60_percent_of_the_dense_one(pruned: PruneReport) -> None:
    assert pruned.pruned_bytes == pytest.approx(pruned.dense_bytes, rel=0.01)  # zeros are stored...
    assert pruned.gzip_ratio <= 0.60  # ...and compress


def test_derived_variants_get_their_own_version_and_the_models_serving_settings(
    pruned: PruneReport, distilled: DistillReport, own_models: Path
) -> None:
    registry = Registry(own_models)
    fp32 = registry.get("digits", "fp32").info
    versions = {fp32.version, pruned.version, distilled.version}
    assert len(versions) == 3  # so cache keys keep the variants apart
    for variant in ("pruned50", "distilled"):
        info = registry.get("digits", variant).info
        assert (info.labels, info.max_batch_size) == (fp32.labels, fp32.max_batch_size)
        assert [s.name for s in info.inputs] == ["image"] and [s.name for s in info.outputs] == ["probs"]


def test_distilled_student_is_smaller_and_faster_than_its_teacher(distilled: DistillReport) -> None:
    assert distilled.student_params * 4 < distilled.teacher_params
    assert distilled.student_bytes * 4 < distilled.teacher_bytes
    # The goal is 3x (docs/benchmarks.md); a shared CI machine gets some slack.
    assert distilled.speedup >= 2.0, distilled


def test_distilled_student_is_within_one_point_of_its_teacher(
    distilled: DistillReport, own_models: Path
) -> None:
    assert distilled.accuracy_loss_points is not None and distilled.accuracy_loss_points <= 1.0, distilled
    data = _data(own_models)
    x, y = np.load(data / "heldout_x.npy"), np.load(data / "heldout_y.npy")
    own = (direct_top1(Registry(own_models).get("digits", "distilled").path, x) == y).mean()
    assert own == pytest.approx(distilled.accuracy_student, abs=0.003)


def test_worker_serves_the_pruned_and_distilled_variants_under_the_model_name(
    pruned: PruneReport, distilled: DistillReport, own_models: Path, settings: Settings, tmp_path: Path
) -> None:
    s = on_db(settings, DB).with_(models_dir=own_models)
    worker = started_worker(s, ["digits:pruned50", "digits:distilled"], tmp_path / "worker.log")
    try:
        x = np.load(_data(own_models) / "heldout_x.npy")[:24]
        registry = Registry(own_models)
        with Client(s) as client:
            ids = {}
            for variant in ("pruned50", "distilled"):
                jobs = client.submit_many("digits", x, variant=variant, no_cache=True)
                got = np.array([job.wait(timeout=30).outputs["probs"].argmax() for job in jobs])
                np.testing.assert_array_equal(got, direct_top1(registry.get("digits", variant).path, x))
                ids[variant] = {job.id for job in jobs}
            assert not ids["pruned50"] & ids["distilled"]  # one input, two variants, two cache keys
    finally:
        worker.stop()


def test_prune_and_distill_from_the_command_line(own_models: Path, settings: Settings) -> None:
    s = settings.with_(models_dir=own_models)
    data = _data(own_models)
    out = inferq(
        s,
        "models",
        "prune",
        "digits",
        "--sparsity",
        "0.3",
        "--variant",
        "cli30",
        "--json",
        timeout=300,
    )  # one-shot (no --fine-tune): the quick path
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["key"] == "digits:cli30" and report["file_sparsity"] == pytest.approx(0.3, abs=0.005)
    out = inferq(
        s,
        "models",
        "distill",
        str(data / KERAS_SOURCE_FILE),
        "--student",
        "pool:4,dense:16",
        "--data",
        str(data / "train_x.npy"),
        "--epochs",
        "2",
        "--variant",
        "cli-student",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "distilled digits:cli-student" in out.stdout and "faster" in out.stdout
    assert 'client.submit("digits", x, variant="cli-student")' in out.stdout


@pytest.mark.parametrize(
    ("args", "kind", "words"),
    [
        (
            ["prune", "{models}/digits/fp32/model.tflite", "--sparsity", "0.5"],
            "UnreadableModel",
            "not a Keras",
        ),
        (
            ["prune", "{models}/digits/savedmodel/saved_model", "--sparsity", "0.5"],
            "UnreadableModel",
            "SavedModel",
        ),
        (["prune", "{models}/broken.keras", "--sparsity", "0.5"], "UnreadableModel", "not a loadable Keras"),
        (["prune", "digits", "--sparsity", "1.5"], "BadInput", "strictly between 0 and 1"),
        (["prune", "digits", "--sparsity", "0"], "BadInput", "strictly between 0 and 1"),
        (["prune", "digits", "--sparsity", "half"], "BadInput", "must be a number"),
        (
            ["distill", "digits", "--student", "conv8", "--data", "{data}/train_x.npy"],
            "BadInput",
            "does not parse",
        ),
        (
            ["distill", "digits", "--student", "tiny", "--data", "{models}/small.npy", "--variant", "s"],
            "BadInput",
            "wrong shape",
        ),
        (
            ["prune", "digits", "--sparsity", "0.5", "--fine-tune", "{models}/small.npy", "--variant", "p"],
            "BadInput",
            "wrong shape",
        ),
        (["prune", "nosuch", "--sparsity", "0.5"], "ModelNotFound", "neither a file nor a model"),
        (["prune", "digits", "--sparsity", "0.5", "--variant", "fp32"], "BadInput", "already exists"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(
    args: list[str], kind: str, words: str, own_models: Path, settings: Settings
) -> None:
    (own_models / "broken.keras").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(own_models / "small.npy", np.zeros((4, 8, 8), np.float32))
    filled = [a.format(models=own_models, data=_data(own_models)) for a in args]
    line = one_line_error(inferq(settings.with_(models_dir=own_models), "models", *filled, timeout=120), kind)
    assert words in line, line
