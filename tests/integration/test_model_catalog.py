"""producers/catalog.py ``ModelCatalog``: announced and local models, variant choice, errors.

Announcements are written as workers write them (``ModelAnnouncement`` in the
``inferq:models`` hash) on a private redis-server; local models are ``meta.json`` files
in a temporary models folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

import producers.catalog
from ops.local.redis_server import LocalRedis
from producers.catalog import ModelCatalog
from tasks.connections import redis_client
from tasks.constants import MODELS_KEY
from tasks.errors import BadInput, ModelNotFound
from tasks.schema import ModelInfo, TensorSpec
from tasks.settings import Settings
from tasks.wire import ModelAnnouncement

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture()
def rc(own_redis: LocalRedis) -> Iterator[redis.Redis[bytes]]:
    c = redis_client(own_redis.url, Settings(broker_url=own_redis.url))
    yield c
    c.close()


@pytest.fixture()
def models_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.fixture()
def catalog(rc: redis.Redis[bytes], models_folder: Path) -> ModelCatalog:
    return ModelCatalog(rc, models_folder)


def model_info(name: str, variant: str, version: str = "1") -> ModelInfo:
    return ModelInfo(
        name=name,
        variant=variant,
        version=version,
        runtime="litert",
        inputs=(TensorSpec("x", (None, 4), "float32", "float32"),),
        outputs=(TensorSpec("y", (3,), "float32", "float32"),),
        labels=("a", "b", "c"),
        max_batch_size=16,
    )


def announce(r: redis.Redis[bytes], info: ModelInfo) -> None:
    r.hset(MODELS_KEY, info.key, ModelAnnouncement.encode(info))


def write_local(folder: Path, info: ModelInfo) -> None:
    meta = folder / info.name / info.variant / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_bytes(orjson.dumps(info.to_dict()))


def test_announced_variants_are_listed(rc: redis.Redis[bytes], catalog: ModelCatalog) -> None:
    infos = [model_info("a", "fp32"), model_info("a", "int8"), model_info("b", "fp16", version="7")]
    for info in infos:
        announce(rc, info)
    assert catalog.models() == {info.key: info for info in infos}


def test_info_picks_fp32_when_present(rc: redis.Redis[bytes], catalog: ModelCatalog) -> None:
    for variant in ("int8", "fp32", "fp16"):
        announce(rc, model_info("a", variant))
    assert catalog.info("a").variant == "fp32"


def test_info_picks_the_first_variant_in_name_order_without_fp32(
    rc: redis.Redis[bytes], catalog: ModelCatalog
) -> None:
    for variant in ("int8", "fp16"):
        announce(rc, model_info("b", variant))
    assert catalog.info("b") == model_info("b", "fp16")


def test_info_with_a_variant_returns_that_variant(rc: redis.Redis[bytes], catalog: ModelCatalog) -> None:
    for variant in ("fp32", "int8"):
        announce(rc, model_info("a", variant, version=variant))
    assert catalog.info("a", "int8") == model_info("a", "int8", version="int8")


def test_unknown_model_raises_model_not_found_naming_the_known_models(
    rc: redis.Redis[bytes], catalog: ModelCatalog, models_folder: Path
) -> None:
    announce(rc, model_info("b", "fp32"))
    announce(rc, model_info("a", "int8"))
    with pytest.raises(ModelNotFound) as err:
        catalog.info("zzz")
    assert "unknown model 'zzz'" in err.value.message
    assert "known models: ['a', 'b']" in err.value.message
    assert str(models_folder) in err.value.message


def test_unknown_model_with_nothing_announced_says_none_are_known(catalog: ModelCatalog) -> None:
    with pytest.raises(ModelNotFound, match="known models: none"):
        catalog.info("zzz")


def test_unknown_variant_names_the_variants_there_are(rc: redis.Redis[bytes], catalog: ModelCatalog) -> None:
    announce(rc, model_info("a", "int8"))
    announce(rc, model_info("a", "fp32"))
    with pytest.raises(ModelNotFound, match=r"model 'a' has no variant 'bf16'; it has \['fp32', 'int8'\]"):
        catalog.info("a", "bf16")


def test_model_only_in_the_local_folder_is_found_without_any_announcement(
    rc: redis.Redis[bytes], catalog: ModelCatalog, models_folder: Path
) -> None:
    write_local(models_folder, model_info("loc", "int8"))
    write_local(models_folder, model_info("loc", "fp32", version="3"))
    assert rc.hlen(MODELS_KEY) == 0
    assert catalog.info("loc") == model_info("loc", "fp32", version="3")
    assert catalog.info("loc", "int8") == model_info("loc", "int8")


def test_announced_and_local_variants_of_one_model_are_merged(
    rc: redis.Redis[bytes], catalog: ModelCatalog, models_folder: Path
) -> None:
    announce(rc, model_info("a", "int8"))
    write_local(models_folder, model_info("a", "fp16"))
    assert catalog.info("a", "fp16") == model_info("a", "fp16")
    assert catalog.info("a") == model_info("a", "fp16")  # no fp32: first of ['fp16', 'int8']
    with pytest.raises(ModelNotFound, match=r"it has \['fp16', 'int8'\]"):
        catalog.info("a", "fp32")


def test_a_newly_announced_variant_is_found_without_waiting_for_the_refresh_interval(
    rc: redis.Redis[bytes], catalog: ModelCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producers.catalog, "REFRESH_S", 3600.0)
    announce(rc, model_info("a", "fp32"))
    assert catalog.info("a").variant == "fp32"  # the announcements are read and kept now
    announce(rc, model_info("a", "int8"))
    announce(rc, model_info("c", "fp32"))
    assert "a:int8" not in catalog.models(), "the kept read was not reused within REFRESH_S"
    # A miss refreshes once: the new variant, and a new model, are found at once.
    assert catalog.info("a", "int8") == model_info("a", "int8")
    assert catalog.info("c") == model_info("c", "fp32")


def test_an_announcement_in_another_wire_version_is_ignored(
    rc: redis.Redis[bytes], catalog: ModelCatalog
) -> None:
    announce(rc, model_info("a", "fp32"))
    future = {**model_info("b", "fp32").to_dict(), "v": 99}
    rc.hset(MODELS_KEY, "b:fp32", orjson.dumps(future))
    rc.hset(MODELS_KEY, "b:int8", b"{not json")
    assert catalog.models() == {"a:fp32": model_info("a", "fp32")}
    with pytest.raises(ModelNotFound, match=r"unknown model 'b'.*known models: \['a'\]"):
        catalog.info("b")


@pytest.mark.parametrize(
    ("model", "variant"), [("../x", None), ("a", "../x"), ("x/fp32", None), ("a.b", None)]
)
def test_bad_names_raise_bad_input(
    rc: redis.Redis[bytes], catalog: ModelCatalog, models_folder: Path, model: str, variant: str | None
) -> None:
    # Something for a path that escaped the models folder to find.
    write_local(models_folder.parent, model_info("x", "fp32"))
    write_local(models_folder, model_info("a", "fp32"))
    with pytest.raises(BadInput, match="name must match"):
        catalog.info(model, variant)


def test_the_cached_answer_agrees_with_info_and_never_reads_redis(
    rc: redis.Redis[bytes], catalog: ModelCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    announce(rc, model_info("m", "fp32"))
    announce(rc, model_info("m", "int8"))
    assert catalog.cached("m", "int8") is None, "nothing read yet: the answer needs Redis"
    catalog.models()
    monkeypatch.setattr(catalog, "backend", None)  # any Redis call would now fail
    assert catalog.cached("m", "int8") == catalog.info("m", "int8")
    assert catalog.cached("m") == catalog.info("m") and catalog.cached("m").variant == "fp32"
    assert catalog.cached("m", "fp16") is None and catalog.cached("other") is None
    assert catalog.cached("../m", "fp32") is None  # not announced: info() answers it, with BadInput
