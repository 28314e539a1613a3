"""Data input and output: manifests, shard writing, and the decoders the pipeline stages are made of."""

from mmadapter.data.audio import SAMPLE_RATE, audio_duration, decode_audio, resample_audio
from mmadapter.data.graph import decode_graph
from mmadapter.data.image import MAX_PIXELS, decode_image
from mmadapter.data.manifest import (
    DEFAULT_PROMPTS,
    ManifestRecord,
    check_placeholders,
    count_placeholders,
    normalise,
    parse_record,
    read_media,
)
from mmadapter.data.members import DecodedSample, decode_item, decode_sample, item_extension, split_members
from mmadapter.data.skips import (
    LIMIT_REASONS,
    SKIP_REASONS,
    BadFractionExceeded,
    BadSample,
    NoUsableSamples,
    SkipCounter,
    SkipReason,
    as_bad_sample,
)
from mmadapter.data.writer import prepare_sample, write_shards

__all__ = [
    "DEFAULT_PROMPTS",
    "LIMIT_REASONS",
    "MAX_PIXELS",
    "SAMPLE_RATE",
    "SKIP_REASONS",
    "BadFractionExceeded",
    "BadSample",
    "DecodedSample",
    "ManifestRecord",
    "NoUsableSamples",
    "SkipCounter",
    "SkipReason",
    "as_bad_sample",
    "audio_duration",
    "check_placeholders",
    "count_placeholders",
    "decode_audio",
    "decode_graph",
    "decode_image",
    "decode_item",
    "decode_sample",
    "item_extension",
    "normalise",
    "parse_record",
    "prepare_sample",
    "read_media",
    "resample_audio",
    "split_members",
    "write_shards",
]
