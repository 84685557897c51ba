"""msgspec encode/decode of a large prediction list (the body of ``GET .../predictions``).

What runs: 1,000 predictions (plus their future potentials) for one seeded STM of
6-10 events against the 10k-pattern corpus with recall_threshold 0.02 and
max_predictions 1000, wrapped in the web layer's ``PredictionsResponse``.
Encoding uses ``msgspec.json.Encoder`` as the server does; decoding turns the
JSON back into typed ``Prediction`` Structs as a Python client would. Run:

    python3 -m pytest bench/bench_codec.py --benchmark-storage=file://bench/baselines
"""

from __future__ import annotations

import random

import msgspec
import pytest

from bench.corpus import random_stm
from engine import EngineConfig, FuturePotential, Prediction
from web.schemas.predictions import PredictionsResponse

CONFIG = EngineConfig(recall_threshold=0.02, max_predictions=1000)


class _TypedResponse(msgspec.Struct, kw_only=True):
    predictions: list[Prediction]
    future_potentials: list[FuturePotential]
    session_id: str
    processor_id: None
    count: int
    time: None
    unique_id: None


@pytest.fixture(scope="module")
def response(knowledge_base):
    kb = knowledge_base(10_000)
    rng = random.Random(5)
    result = kb.predict(random_stm(rng) + random_stm(rng), CONFIG)
    return PredictionsResponse(predictions=result.predictions, future_potentials=result.future_potentials,
                               session_id="session-bench", processor_id=None,
                               count=len(result.predictions), time=None, unique_id=None)


def test_encode_predictions(benchmark, record, response):
    encoder = msgspec.json.Encoder()
    body = encoder.encode(response)
    benchmark.extra_info.update(operation="msgspec.json.Encoder.encode(PredictionsResponse)",
                                predictions=response.count, future_potentials=len(response.future_potentials),
                                body_bytes=len(body), patterns=10_000)
    print(f"\nencode: {response.count} predictions + {len(response.future_potentials)} future potentials "
          f"-> {len(body):,} bytes of JSON")
    benchmark.pedantic(encoder.encode, args=(response,), rounds=300, iterations=1, warmup_rounds=10)
    record("json encode predictions", f"{response.count} preds")


def test_decode_predictions(benchmark, record, response):
    body = msgspec.json.encode(response)
    decoder = msgspec.json.Decoder(_TypedResponse)
    assert decoder.decode(body).count == response.count
    benchmark.extra_info.update(operation="msgspec.json.Decoder(typed).decode", predictions=response.count,
                                body_bytes=len(body), patterns=10_000)
    print(f"\ndecode: {len(body):,} bytes of JSON -> {response.count} typed Prediction Structs")
    benchmark.pedantic(decoder.decode, args=(body,), rounds=300, iterations=1, warmup_rounds=10)
    record("json decode predictions", f"{response.count} preds")
