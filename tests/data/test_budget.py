"""A shard set's ``max_samples``: exactly its first N samples, in the order its shards are listed."""

from __future__ import annotations

import itertools
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT, tiny_recipe
from test_pipeline import keys, meta, write_tar

from mmadapter.config import DataConfig, Recipe, RecipeError, ShardSet
from mmadapter.data.budget import first_samples, sample_key
from mmadapter.data.pipeline import ShardStream, StreamPosition
from mmadapter.model import MultimodalLM

ASSETS = ROOT / "tests" / "assets" / "shards"
SHARD_0 = ["tone-en-0", "tone-en-1", "tone-en-2", "tone-en-3", "tone-de-0", "tone-de-1"]


@pytest.fixture(scope="module")
def model() -> MultimodalLM:
    return MultimodalLM.from_recipe(tiny_recipe())


def budget_stream(model: MultimodalLM, shards: str, n: int, *, resampled: bool) -> ShardStream:
    cfg = DataConfig(max_tokens=400, shuffle_buffer=4)
    sets = [ShardSet(shards=shards, max_samples=n)]
    return ShardStream(sets, model.prepare_decoded, cfg, model.tokenizer.pad_token_id, StreamPosition(), resampled)


def test_sample_key_is_webdatasets_grouping() -> None:
    assert sample_key("utt-01.audio.flac") == "utt-01"
    assert sample_key("de/train/utt-01.json") == "de/train/utt-01"
    assert sample_key("a.b/utt.json") == "a.b/utt" and sample_key("README") is None


def test_first_samples_counts_samples_not_members_and_stops_at_the_budget() -> None:
    urls = [str(ASSETS / "shard-000000.tar"), str(ASSETS / "shard-000001.tar")]
    budget = first_samples(urls, 4)
    assert budget.urls == urls[:1] and budget.shard_weights == [4]
    assert {k for _, k in budget.keys} == set(SHARD_0[:4])
    spanning = first_samples(urls, 8)
    assert spanning.urls == urls and spanning.shard_weights == [6, 2]
    assert {k for u, k in spanning.keys if u == urls[1]} == {"colour-0", "colour-1"}
    everything = first_samples(urls, 1000)
    assert everything.shard_weights == [6, 5]


def test_one_pass_reads_exactly_the_budget(model: MultimodalLM) -> None:
    got = keys(budget_stream(model, str(ASSETS / "shard-{000000..000001}.tar"), 8, resampled=False))
    assert sorted(got) == sorted([*SHARD_0, "colour-0", "colour-1"])


def test_the_endless_stream_cycles_over_the_budget_only(model: MultimodalLM) -> None:
    batches = itertools.islice(
        iter(budget_stream(model, str(ASSETS / "shard-{000000..000001}.tar"), 3, resampled=True)), 20
    )
    got = keys(batches)
    assert len(got) > 6 and set(got) == set(SHARD_0[:3])


def test_a_budget_over_empty_shards_or_remote_ones_is_an_error(model: MultimodalLM, tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    with pytest.raises(ValueError, match="hold no samples"):
        budget_stream(model, str(empty), 5, resampled=True)
    with pytest.raises(ValueError, match="local shard files"):
        first_samples(["pipe:cat x.tar"], 5)


def test_a_truncated_shard_counts_its_members_before_the_cut(tmp_path: Path) -> None:
    shard = tmp_path / "cut.tar"
    write_tar(shard, {f"s{i}.json": meta("Say hi", "hi") for i in range(4)})
    data = shard.read_bytes()
    shard.write_bytes(data[: 512 * 5])  # two whole members, and the header of a third
    budget = first_samples([str(shard)], 10)
    assert {k for _, k in budget.keys} >= {"s0", "s1"}


def test_the_recipe_rejects_a_budget_that_is_not_positive() -> None:
    data = tiny_recipe().model_dump(mode="json")
    data["data"] = {"train": [{"shards": "x.tar", "max_samples": 0}]}
    with pytest.raises(RecipeError, match=r"data\.train\.0\.max_samples"):
        Recipe.from_dict(data)


def test_a_key_that_recurs_later_in_its_tar_takes_one_place_per_run(model: MultimodalLM, tmp_path: Path) -> None:
    shard = tmp_path / "recurring.tar"
    write_tar(shard, {"a.json": meta("hi", "1"), "b.json": meta("hi", "2"), "a.txt": b"x", "c.json": meta("hi", "3")})
    budget = first_samples([str(shard)], 3)  # webdataset streams a, b, a, c: four samples
    assert budget.shard_weights == [3] and {k for _, k in budget.keys} == {"a", "b"}
    assert first_samples([str(shard)], 10).shard_weights == [4]
    for n, expected in ((1, ["a"]), (2, ["a", "b"])):  # the stream holds to the budget, later runs of a included
        assert sorted(keys(budget_stream(model, str(shard), n, resampled=False))) == expected


def test_members_webdataset_skips_take_no_place(model: MultimodalLM, tmp_path: Path) -> None:
    shard = tmp_path / "meta.tar"
    write_tar(shard, {"__meta__/info.json": b"{}", "__index__": b"", **{f"{k}.json": meta("hi", k) for k in "abc"}})
    assert sample_key("__meta__/info.json") is None and sample_key("__index__") is None
    assert {k for _, k in first_samples([str(shard)], 2).keys} == {"a", "b"}
    assert sorted(keys(budget_stream(model, str(shard), 2, resampled=False))) == ["a", "b"]
