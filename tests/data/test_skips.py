from __future__ import annotations

import json
import logging
import pickle
import tarfile

import pytest

from mmadapter.data.skips import (
    LIMIT_REASONS,
    LOGGED_PER_REASON,
    SKIP_REASONS,
    BadFractionExceeded,
    BadSample,
    NoUsableSamples,
    SkipCounter,
    as_bad_sample,
)


def test_closed_set_of_reasons() -> None:
    assert SKIP_REASONS == (
        "missing_file",
        "corrupt_audio",
        "empty_audio",
        "corrupt_image",
        "too_large_image",
        "bad_graph",
        "graph_no_nodes",
        "graph_edge_out_of_range",
        "too_large_graph",
        "bad_json",
        "placeholder_mismatch",
        "too_long",
        "truncated_tar",
        "unsafe_member",
    )
    with pytest.raises(ValueError, match="unknown skip reason 'corrupt'"):
        BadSample("corrupt", "k", "x")  # type: ignore[arg-type]


def test_bad_sample_message_and_pickle() -> None:
    bad = BadSample("corrupt_audio", "utt-1", "flac decoder lost sync", "a/utt-1.flac")
    assert isinstance(bad, ValueError)
    assert str(bad) == "sample 'utt-1' (a/utt-1.flac): corrupt_audio: flac decoder lost sync"
    again = pickle.loads(pickle.dumps(bad))  # crosses process pools
    assert (again.reason, again.key, again.detail, again.source) == (bad.reason, bad.key, bad.detail, bad.source)
    unnamed = BadSample("empty_audio", None, "0 samples", "x.wav")
    assert unnamed.with_key("k2", "ignored") is unnamed
    assert (unnamed.key, unnamed.source) == ("k2", "x.wav")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (FileNotFoundError("no such file: a.flac"), "missing_file"),
        (tarfile.ReadError("unexpected end of data"), "truncated_tar"),
        (json.JSONDecodeError("Expecting value", "{", 1), "bad_json"),
        (BadSample("bad_graph", None, "no nodes"), "bad_graph"),
    ],
)
def test_one_mapping_to_reasons(exc: Exception, reason: str) -> None:
    bad = as_bad_sample(exc, key="k", source="s")
    assert bad is not None and bad.reason == reason and bad.key == "k"


def test_placeholder_mismatch_from_the_tokenizer_is_mapped() -> None:
    from mmadapter.llm.chat import PlaceholderMismatch

    bad = as_bad_sample(PlaceholderMismatch("1 <audio> placeholder(s) for 2 audio item(s)"), key="k")
    assert bad is not None and bad.reason == "placeholder_mismatch"


def test_bugs_are_not_counted_as_bad_data() -> None:
    counter = SkipCounter()
    assert as_bad_sample(KeyError("x")) is None
    with pytest.raises(ZeroDivisionError):
        counter.record(ZeroDivisionError("bug"))
    assert counter.skipped == 0


def test_counter_counts_merges_and_summarises() -> None:
    a, b = SkipCounter(), SkipCounter()
    a.record_ok(7)
    a.record(BadSample("corrupt_audio", "k1", "lost sync"))
    assert a.handler(FileNotFoundError("gone")) is True
    b.record_ok(2)
    b.record(BadSample("corrupt_audio", "k2", "truncated"))
    a.merge(b.as_dict())
    assert (a.seen, a.ok, a.skipped) == (12, 9, 3)
    assert a.by_reason() == {"missing_file": 1, "corrupt_audio": 2}
    assert a.as_dict()["by_reason"] == {"missing_file": 1, "corrupt_audio": 2}
    assert a.summary() == "skipped 3 of 12 samples (25.0%): corrupt_audio 2, missing_file 1"
    assert SkipCounter.from_dict(json.loads(json.dumps(a.as_dict()))) == a


def test_check_raises_past_the_fraction_naming_the_top_reason() -> None:
    counter = SkipCounter()
    counter.record_ok(90)
    for i in range(8):
        counter.record(BadSample("corrupt_image", f"img{i}", "cannot identify image file"))
    counter.record(BadSample("bad_json", "j", "not JSON"))
    counter.check(0.1)  # 9 of 99: fine
    counter.record(BadSample("bad_json", "j2", "not JSON"))
    counter.record(BadSample("corrupt_image", "img9", "truncated"))
    with pytest.raises(BadFractionExceeded) as info:
        counter.check(0.1)
    message = str(info.value)
    assert "11 of 101 samples were bad (10.9%)" in message
    assert "max_bad_fraction 10.0%" in message
    assert "top reasons: corrupt_image 9, bad_json 2" in message
    assert "sample 'img0'" in message


def test_check_waits_for_min_seen() -> None:
    counter = SkipCounter()
    counter.record(BadSample("bad_json", "k", "x"))
    counter.check(0.05, min_seen=10)
    with pytest.raises(BadFractionExceeded, match="1 of 1 samples"):
        counter.check(0.05, min_seen=1)


def test_skips_above_the_limits_are_counted_but_not_judged() -> None:
    counter = SkipCounter()
    counter.record_ok(95)
    for i in range(900):
        counter.record(BadSample(LIMIT_REASONS[i % len(LIMIT_REASONS)], f"k{i}", "above data.limits"))
    counter.check(0.05, min_seen=100)  # 95 judged: too few to judge, however many were above the limits
    assert (counter.skipped, counter.over_limits, counter.bad) == (900, 900, 0)
    assert counter.summary().endswith("too_large_graph 300, too_long 300 (900 above the limits)")
    for i in range(5):
        counter.record(BadSample("corrupt_audio", f"a{i}", "not audio"))
    counter.check(0.05)  # 5 of 100 judged
    counter.record(BadSample("corrupt_audio", "a5", "not audio"))
    with pytest.raises(BadFractionExceeded) as info:
        counter.check(0.05)  # 6 of 101 judged, although only 6 of 1001 seen
    assert "6 of 101 samples were bad (5.9%, not counting 900 above the limits)" in str(info.value)
    assert "top reasons: corrupt_audio 6;" in str(info.value)


def test_give_up_after_that_many_skips_or_barren_reads_in_a_row() -> None:
    counter = SkipCounter(give_up_after=3)
    counter.record(BadSample("bad_json", "a", "x"))
    counter.record(BadSample("too_long", "b", "x"))
    counter.record_ok()  # a sample passing starts the run again
    counter.record(BadSample("bad_json", "c", "x"))
    counter.record_barren("empty.tar")
    with pytest.raises(NoUsableSamples, match=r"nothing passed in the last 3 samples and shard reads.*sample 'e'"):
        counter.record(BadSample("too_long", "e", "x"))
    assert counter.skipped == 4
    assert SkipCounter().merge(counter) == counter  # the run length is local: not merged, not compared
    passing = NoUsableSamples("the message", "<stream>", "url")  # as webdataset's tar expander hands it back
    with pytest.raises(NoUsableSamples) as info:
        counter.handler(passing)
    assert info.value.args == ("the message",) and counter.skipped == 4


def test_each_reason_logs_its_first_skips_then_only_powers_of_ten(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mmadapter.data.skips")
    counter = SkipCounter()
    for i in range(1000):
        counter.record(BadSample("corrupt_audio", f"a{i}", "not audio"))
    counter.record(BadSample("bad_json", "j", "not JSON"))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == LOGGED_PER_REASON + 2 + 1  # ten, the 100th and the 1000th, and the first bad_json
    assert "(100 corrupt_audio skips so far here" in warned[LOGGED_PER_REASON]
    assert "sample 'a999'" in warned[-2] and "sample 'j'" in warned[-1]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 1000 - LOGGED_PER_REASON - 2
