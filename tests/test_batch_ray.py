"""Ray Data over the loopback server: two actors, one shared limiter actor, results as rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mmstream as mm
from mmstream.testing import Fault, Script, TestServer, answer_text

SAMPLE = Path(__file__).parent.parent / "docs" / "assets" / "sample.png"

# Ray warns about its own deprecated settings while it starts; that is not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ray(\.|$)"),
    pytest.mark.filterwarnings(r"ignore::FutureWarning:ray(\.|$)"),
]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray instance for the module (starting one takes seconds)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:  # the [ray] extra is part of [test]: CI has it
        pytest.skip(f"ray is not installed ({exc}); pip install 'mmstream[ray]'")
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            ignore_reinit_error=True,
        )
    except Exception as exc:
        pytest.skip(f"a local Ray instance did not start: {exc!r}")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer.start_in_thread() as server:
        yield server


def provider(server: TestServer) -> mm.providers.OpenAI:
    return mm.providers.OpenAI(model="gpt-4o-mini", api_key="sk-ray", base_url=server.url("/v1"))


def test_two_actors_share_one_requests_per_minute_limit(ray_local: Any, server: TestServer) -> None:
    import ray.data

    from mmstream.batch.ray import LLMPredictor, shared_rate_limit

    server.inject_when(lambda _, prompt: prompt == "row 13", Fault.http_status(400))
    rows = [
        {
            "id": f"r{n}",
            "prompt": f"row {n}",
            "images": [str(SAMPLE)] if n % 50 == 0 else [],  # read on the worker
            "label": n,
        }
        for n in range(500)
    ]
    rate, burst = 6000.0, 10  # 100 requests a second across the cluster, 10 at once
    limiter = shared_rate_limit(requests_per_minute=rate, burst_requests=burst)
    dataset = ray.data.from_items(rows).map_batches(
        LLMPredictor,
        fn_constructor_kwargs={"llm": provider(server), "limiter": limiter, "concurrency": 8},
        concurrency=2,
        batch_size=25,
    )
    out = {row["id"]: row for row in dataset.take_all()}

    assert len(out) == 500
    for n in range(500):
        row = out[f"r{n}"]
        assert row["label"] == n  # other columns pass through
        if n == 13:
            assert row["error_kind"] == "BadRequestError" and row["error_status"] == 400
            continue
        assert row["error_kind"] is None
        assert row["text"] == answer_text(f"row {n}", images=1 if n % 50 == 0 else 0)
        assert row["input_tokens"] is not None and row["attempts"] == 1

    # From the server's log: no two seconds hold more than the rate and the burst allow
    # (half a second of slack: a request reaches the server a little after its grant),
    # and the whole run took as long as the limit makes it (unlimited, it takes < 1 s).
    times = sorted(r.monotonic for r in server.requests)
    assert len(times) == 500
    per_second = rate / 60
    busiest = max(len([t for t in times[index:] if t < at + 2.0]) for index, at in enumerate(times))
    assert busiest <= burst + per_second * 2.5, busiest
    assert times[-1] - times[0] >= (500 - burst) / per_second * 0.9
    stats = ray_local.get(limiter.stats.remote())
    assert len(stats["callers"]) == 2, stats  # both actors drew from the one budget
    assert sum(stats["callers"].values()) == 500 and min(stats["callers"].values()) > 50


def test_a_429_on_one_actor_pauses_both_on_trio(ray_local: Any, server: TestServer) -> None:
    import ray.data

    from mmstream.batch.ray import LLMPredictor, shared_rate_limit

    server.script = Script(chunks=3, pause=0.01)
    server.inject_when(lambda serial, _: serial == 20, Fault.http_status(429, retry_after=2))
    limiter = shared_rate_limit(requests_per_minute=60_000)
    dataset = ray.data.from_items([{"id": n, "prompt": f"row {n}"} for n in range(80)]).map_batches(
        LLMPredictor,
        fn_constructor_kwargs={
            "llm": provider(server),
            "limiter": limiter,
            "concurrency": 4,
            "sync_backend": "trio",
        },
        concurrency=2,
        batch_size=10,
        batch_format="pandas",
    )
    out = dataset.take_all()
    assert sorted(int(row["id"]) for row in out) == list(range(80))
    assert all(row["error_kind"] is None for row in out)
    requests = server.requests
    limited = next(r for r in requests if r.status == 429)
    later = [r.monotonic - limited.monotonic for r in requests if r.monotonic > limited.monotonic]
    assert not [t for t in later if 0.15 < t < 1.9], later  # neither actor sent during the pause
    assert ray_local.get(limiter.stats.remote())["pauses"] == 1


def test_rows_in_process_and_bad_rows(ray_local: Any, server: TestServer) -> None:
    """The predictor called directly (as an actor calls it), in a numpy-format batch."""
    import numpy as np

    from mmstream.batch import InvalidJobError
    from mmstream.batch.ray import RESULT_COLUMNS, LLMPredictor

    predictor = LLMPredictor(provider(server), concurrency=2)
    try:
        out = predictor(
            {
                "id": np.array(["a", "b"]),
                "prompt": np.array(["first", "second"]),
                "images": np.array(
                    [np.array([str(SAMPLE)]), np.array([], dtype=str)], dtype=object
                ),
            }
        )
        assert list(out) == ["prompt", "images", *RESULT_COLUMNS]
        assert out["text"] == [answer_text("first", images=1), answer_text("second")]
        with pytest.raises(InvalidJobError, match="share an id"):
            predictor({"id": ["a", "a"], "prompt": ["x", "y"]})
        with pytest.raises(mm.ConfigurationError, match="concurrency"):
            LLMPredictor(concurrency=0)
    finally:
        predictor.llm.close()
