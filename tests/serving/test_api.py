"""The OpenAI-compatible API on Ray Serve, with the official openai client: weights pulled
from MinIO at replica start, completions, chat, streaming, batching, errors, back-pressure,
and the Prometheus metrics."""

from __future__ import annotations

import concurrent.futures as cf
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from ridgeline_dev.cluster import free_port
from ridgeline_dev.ray_apps import BUILDER, serve_apps

MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def server(tiny_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    cache = tmp_path_factory.mktemp("weights-cache")
    base = {
        "model_uri": tiny_uri,
        "model_name": MODEL,
        "compute_dtype": "float32",
        "max_context_tokens": 256,
        "gpus_per_replica": 0,
        "cache_dir": str(cache),
        "engine_log_interval_s": 1,
    }
    apps = {
        "main": ("/", {**base, "max_batch_size": 16}),
        "small": ("/small", {**base, "max_batch_size": 1, "max_queued_requests": 1}),
        "breakable": (
            "/breakable",
            {**base, "max_batch_size": 2, BUILDER: "ridgeline_dev.breakable_app:build_app"},
        ),
    }
    with serve_apps(apps) as urls:
        yield {**urls, "cache": str(cache)}


@pytest.fixture
def client(server: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key="unused", max_retries=0)


def test_weights_came_from_the_store_into_the_node_cache(server: dict[str, str]) -> None:
    cached = list(Path(server["cache"]).rglob("model.safetensors"))
    assert len(cached) == 1
    assert (cached[0].parent / ".ridgeline-complete.json").exists()


def test_the_replica_logs_its_engine_figures_while_it_works(
    server: dict[str, str], client: openai.OpenAI
) -> None:
    """The engine line (engine_log.py) reaches the replica's stderr, which is `kubectl logs` in
    a pod (RAY_LOG_TO_STDERR) and Ray's worker log files here."""
    logs = Path(server["logs"])

    def engine_lines() -> list[str]:
        return [
            line
            for path in logs.glob("worker-*")
            for line in path.read_text(errors="replace").splitlines()
            if "ridgeline.serving: engine:" in line
        ]

    def new_lines_of_this_app() -> list[str]:
        # The other apps' replicas (/small, /breakable) log their own lines into the same
        # directory, in files of their own: only a new line with this app's plan counts.
        return [line for line in engine_lines() if line not in before and "(plan 16)" in line]

    before = set(engine_lines())
    deadline = time.monotonic() + 30
    while not new_lines_of_this_app() and time.monotonic() < deadline:
        client.completions.create(model=MODEL, prompt="log line", max_tokens=16)
        time.sleep(0.2)
    lines = new_lines_of_this_app()
    assert lines, "no engine line of this app within 30 s"
    assert "tokens/s generated" in lines[-1]
    assert "KV cache" in lines[-1]


def test_a_header_over_the_budget_is_refused_by_the_proxy(server: dict[str, str]) -> None:
    """Serve's proxy runs with proxy_limits installed (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH,
    as the serving image sets it): 431 past 16 KiB of headers, in OpenAI's shape."""
    ok = httpx.get(server["base"] + "/health", headers={"x-pad": "a" * 15_000}, timeout=30)
    assert ok.status_code == 200
    big = httpx.get(server["base"] + "/health", headers={"x-pad": "a" * 17_000}, timeout=30)
    assert big.status_code == 431
    assert "16384 bytes" in big.json()["error"]["message"]


def test_a_replica_whose_engine_breaks_is_replaced(server: dict[str, str]) -> None:
    """After a sticky device fault every step fails: its requests get 500 engine_error, the
    health check's probe fails, /health says why, and Serve replaces the replica."""
    url = server["base"] + "/breakable"
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, "temperature": 0}
    with httpx.Client(timeout=120) as http:
        assert http.post(url + "/v1/completions", json=body).status_code == 200
        assert http.post(url + "/test/break").status_code == 200
        failed = http.post(url + "/v1/completions", json=body)
        assert failed.status_code == 500
        assert failed.json()["error"]["code"] == "engine_error"
        assert "illegal memory access" in failed.json()["error"]["message"]
        reasons = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            health = http.get(url + "/health")
            if health.status_code == 503:
                reasons.append(health.json()["reason"])
            elif reasons:  # a new replica answers
                break
            time.sleep(0.5)
        assert reasons, "the broken replica never said it was unhealthy"
        assert "keep failing" in reasons[-1]
        assert "illegal memory access" in reasons[-1]
        assert health.status_code == 200
        assert http.post(url + "/v1/completions", json=body).status_code == 200


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion(client: openai.OpenAI) -> None:
    out = client.completions.create(model=MODEL, prompt="the model", max_tokens=8, temperature=0)
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert out.usage.completion_tokens == 8
    again = client.completions.create(model=MODEL, prompt="the model", max_tokens=8, temperature=0)
    assert again.choices[0].text == out.choices[0].text


def test_chat_uses_the_chat_template(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        max_tokens=6,
        temperature=0,
        seed=1,
    )
    assert out.choices[0].message.role == "assistant"
    assert out.usage is not None
    # <|system|>\nbe brief<|end|>\n<|user|>\nhello<|end|>\n<|assistant|>\n is more than 6 tokens
    assert out.usage.prompt_tokens > 6


def test_streaming_chat_equals_the_non_streamed_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "ridge roofline"}]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["length"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_streaming_completion(client: openai.OpenAI) -> None:
    parts = [
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="a", max_tokens=5, stream=True, temperature=0
        )
    ]
    assert (
        "".join(parts)
        == client.completions.create(model=MODEL, prompt="a", max_tokens=5, temperature=0)
        .choices[0]
        .text
    )


def test_n_choices_with_logprobs(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=MODEL, prompt="the model", max_tokens=5, n=3, seed=4, logprobs=2
    )
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    assert out.usage is not None
    assert out.usage.completion_tokens == 15
    for choice in out.choices:
        assert choice.logprobs is not None
        assert len(choice.logprobs.tokens or []) == 5
        assert all(len(t) == 2 for t in choice.logprobs.top_logprobs or [])
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        presence_penalty=1.0,
    )
    content = chat.choices[0].logprobs.content if chat.choices[0].logprobs else None
    assert content is not None
    assert len(content) == 4
    assert all(len(t.top_logprobs) == 3 for t in content)


def test_streams_count_at_admission(server: dict[str, str]) -> None:
    """Streams that are accepted but not yet read hold their place: a burst of streams beyond
    batch + queue (1 + 1 on /small) gets 429s."""
    url = server["base"] + "/small/v1/completions"
    body = {"model": MODEL, "prompt": "x", "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.Client(timeout=60) as http:
        opened = [http.stream("POST", url, json=body) for _ in range(4)]
        responses = [cm.__enter__() for cm in opened]
        try:
            codes = [r.status_code for r in responses]
        finally:
            for cm in opened:
                cm.__exit__(None, None, None)
    assert codes.count(200) == 2, codes
    assert codes.count(429) == 2, codes


def _metric(server: dict[str, str], name: str) -> dict[str, float]:
    text = urllib.request.urlopen(server["metrics"], timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_sixteen_concurrent_requests_are_batched(
    client: openai.OpenAI, server: dict[str, str]
) -> None:
    def one(i: int) -> str:
        return (
            client.completions.create(
                model=MODEL, prompt=f"the batch {i}", max_tokens=16, temperature=0
            )
            .choices[0]
            .text
        )

    with cf.ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(one, range(16)))
    assert len(texts) == 16
    deadline = time.monotonic() + 30
    batches: dict[str, float] = {}
    while time.monotonic() < deadline:
        batches = _metric(server, "ray_ridgeline_batch_size_bucket")
        le1 = sum(v for k, v in batches.items() if 'le="1.0"' in k and 'model="tiny-chat"' in k)
        count = sum(
            v
            for k, v in _metric(server, "ray_ridgeline_batch_size_count").items()
            if 'model="tiny-chat"' in k
        )
        if count and count > le1:  # some batch held more than one request
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no batch larger than 1 in the metrics: {batches}")


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        (
            "/v1/completions",
            {"model": MODEL, "prompt": "the " * 300, "max_tokens": 4},
            400,
            "prompt",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 400},
            400,
            "messages",
        ),
        ("/v1/completions", {"model": MODEL, "prompt": "a", "n": 0}, 400, "n"),
        (
            "/v1/completions",
            {"model": MODEL, "prompt": "a", "logit_bias": {"5": 3}},
            400,
            "logit_bias",
        ),
        ("/v1/completions", {"model": MODEL, "prompt": "a", "echo": True}, 400, "echo"),
        ("/v1/completions", {"model": MODEL, "prompt": "a", "best_of": 3}, 400, "best_of"),
        ("/v1/completions", {"model": MODEL, "prompt": "a", "seed": 2**70}, 400, "seed"),
        ("/v1/completions", {"model": MODEL, "prompt": [5, 10**6]}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": []}, 400, "prompt"),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            400,
            "top_logprobs",
        ),
        ("/v1/completions", {"model": MODEL, "prompt": "a", "temperature": 5}, 400, "temperature"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
        ("/v1/completions", {"model": "gpt-4", "prompt": "a"}, 404, "model"),
    ],
)
def test_bad_requests_are_refused_in_openai_shape(
    server: dict[str, str], path: str, body: dict, status: int, param: str | None
) -> None:  # type: ignore[type-arg]
    resp = httpx.post(server["base"] + path, json=body, timeout=30)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param:
        assert err["param"] == param


def test_context_overflow_raises_openai_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256 tokens"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "the " * 300}]
        )


def test_token_id_prompts_and_null_assistant_content(client: openai.OpenAI) -> None:
    ids = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=3, temperature=0)
    assert ids.usage is not None
    assert ids.usage.prompt_tokens == 3
    nested = client.completions.create(model=MODEL, prompt=[[5, 6, 7]], max_tokens=3, temperature=0)
    assert nested.choices[0].text == ids.choices[0].text
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "again"},
        ],
        max_tokens=2,
    )
    assert chat.choices[0].finish_reason in ("stop", "length")


def test_a_lone_surrogate_is_a_400_naming_the_prompt(server: dict[str, str]) -> None:
    resp = httpx.post(
        server["base"] + "/v1/completions",
        content=b'{"model": "tiny-chat", "prompt": "bad \\ud800"}',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "prompt"


def test_a_json_body_must_say_so(server: dict[str, str]) -> None:
    resp = httpx.post(
        server["base"] + "/v1/completions",
        content=b'{"model": "tiny-chat", "prompt": "a"}',
        headers={"content-type": "text/plain"},
    )
    assert resp.status_code == 400
    assert "application/json" in resp.json()["error"]["message"]


def test_invalid_json_is_a_400(server: dict[str, str]) -> None:
    resp = httpx.post(
        server["base"] + "/v1/completions",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "request body is not valid JSON"


def test_overload_answers_429_with_retry_after(server: dict[str, str]) -> None:
    url = server["base"] + "/small/v1/completions"

    def one(i: int) -> httpx.Response:
        return httpx.post(
            url,
            json={"model": MODEL, "prompt": f"x {i}", "max_tokens": 48, "temperature": 0},
            timeout=60,
        )

    with cf.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(one, range(10)))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes, codes
    assert 429 in codes, codes
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "rate_limit_exceeded"


EXPECTED_METRICS = [
    "ray_ridgeline_requests_total",
    "ray_ridgeline_prompt_tokens_total",
    "ray_ridgeline_completion_tokens_total",
    "ray_ridgeline_time_to_first_token_seconds_bucket",
    "ray_ridgeline_time_per_output_token_seconds_bucket",
    "ray_ridgeline_batch_size_bucket",
    "ray_ridgeline_batch_target",
    "ray_ridgeline_queue_depth",
    "ray_ridgeline_weight_load_seconds",
    "ray_ridgeline_weight_load_bytes",
    "ray_ridgeline_weight_cache_read_bytes",
    "ray_ridgeline_running_sequences",
    "ray_ridgeline_waiting_sequences",
    "ray_ridgeline_kv_cache_tokens",
    "ray_ridgeline_kv_cache_planned_tokens",
    "ray_ridgeline_prefill_tokens_per_step_bucket",
    "ray_ridgeline_decode_tokens_per_step_bucket",
    "ray_ridgeline_engine_step_seconds_bucket",
    "ray_ridgeline_replica_startup_seconds",
]


def test_metrics_are_exported_with_one_prefix(
    client: openai.OpenAI, server: dict[str, str]
) -> None:
    client.completions.create(model=MODEL, prompt="metrics", max_tokens=4)
    deadline = time.monotonic() + 30
    missing = EXPECTED_METRICS
    while missing and time.monotonic() < deadline:
        text = urllib.request.urlopen(server["metrics"], timeout=5).read().decode()
        missing = [m for m in EXPECTED_METRICS if not re.search(rf"^{m}\{{", text, re.M)]
        time.sleep(0.5)
    assert not missing
    codes = _metric(server, "ray_ridgeline_requests_total")
    assert any('code="200"' in k and 'route="/v1/completions"' in k for k in codes)
    target = _metric(server, "ray_ridgeline_batch_target")
    assert 16.0 in target.values()
    # the KV plan: max_batch_by_memory defaults to the batch, 16 x 256 tokens
    assert 16.0 * 256 in _metric(server, "ray_ridgeline_kv_cache_planned_tokens").values()
    startup = _metric(server, "ray_ridgeline_replica_startup_seconds")
    for phase in ("download", "load", "warmup"):
        assert any(f'phase="{phase}"' in k and v > 0 for k, v in startup.items()), startup
    # No node cache in `ridgeline serve`: the weights came from the store.
    assert all('source="download"' in k for k in startup), startup


def test_a_client_that_goes_away_cancels_its_sequence(server: dict[str, str]) -> None:
    """A stream closed after its first chunk frees its row at once: on /small (batch 1,
    queue 1) two more long requests are admitted right after, not answered 429."""
    url = server["base"] + "/small/v1/completions"
    body = {"model": MODEL, "prompt": "go", "max_tokens": 240, "temperature": 0, "stream": True}
    with httpx.Client(timeout=60) as http:
        for _ in range(3):
            with http.stream("POST", url, json=body) as resp:
                assert resp.status_code == 200
                next(resp.iter_lines())
        time.sleep(0.5)  # the disconnect reaches the replica
        statuses = []
        opened = [http.stream("POST", url, json=body) for _ in range(2)]
        try:
            statuses = [cm.__enter__().status_code for cm in opened]
        finally:
            for cm in opened:
                cm.__exit__(None, None, None)
    assert statuses == [200, 200]


# ---- dashboards -------------------------------------------------------------------------------


def _exported_names(server: dict[str, str]) -> set[str]:
    text = urllib.request.urlopen(server["metrics"], timeout=5).read().decode()
    return {
        re.split(r"[{ ]", line)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_dashboard_serving_queries_use_exported_metric_names(
    client: openai.OpenAI, server: dict[str, str]
) -> None:
    from tests.unit.test_chart import dashboard_metrics

    client.completions.create(model=MODEL, prompt="dash", max_tokens=3)
    wanted = {m for m in dashboard_metrics() if m.startswith("ray_ridgeline_")}
    assert wanted
    deadline = time.monotonic() + 30
    while not wanted <= _exported_names(server) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert wanted - _exported_names(server) == set()


def test_prometheus_returns_data_for_every_dashboard_query(
    client: openai.OpenAI, server: dict[str, str], tmp_path: Path
) -> None:
    """Debian's Prometheus scrapes the serving app (Ray's metrics) and the operator's metrics
    module under a short load; every panel's query must return series."""
    import threading

    from prometheus_client import start_http_server

    from ridgeline.api import InferenceModelSpec
    from ridgeline.api.inference_model import InferenceModelStatus, ReplicaStatus
    from ridgeline.planner import NodePool, plan_model
    from ridgeline.shape.reader import read_model_shape
    from ridgeline_dev.prometheus import Prometheus, static_jobs
    from ridgeline_operator import metrics as operator_metrics
    from tests.unit.test_chart import dashboard_exprs

    # The operator's metrics for this model, as the operator computes them.
    spec = InferenceModelSpec.model_validate(
        {
            "model": {"uri": "s3://models/tiny-chat"},
            "accelerators": ["cpu"],
            "workload": {"maxContextTokens": 256},
        }
    )
    plan = plan_model(
        read_model_shape("s3://models/tiny-chat"),
        spec,
        # priced, so the dashboard's cost row has the operator's price gauge to query
        [NodePool(name="cpu", gpu_product="cpu", gpus_per_node=0, price_per_node_hour=0.36)],
    )
    operator_metrics.observe(
        "default",
        MODEL,
        InferenceModelStatus(plan=plan, replicas=ReplicaStatus(desired=1, ready=1)),
    )
    operator_port = free_port()
    start_http_server(operator_port, addr="127.0.0.1")
    # A node cache agent's metrics (its own class) holding this model's checkpoint, for the
    # Weights row: the agent runs in a cluster only.
    from ridgeline_serving.node_cache.decide import ModelRef, Need
    from ridgeline_serving.node_cache.metrics import Metrics

    agent = Metrics("node-1")
    need = Need("tiny-chat-dir", "s3://models/tiny-chat", 100, (ModelRef("default", MODEL),))
    agent.checkpoints({need.directory: need}, {need.directory: (100, 100)})
    agent.downloaded(need.directory, 100)
    agent.hit(need.directory)
    agent.miss(need.directory)
    agent.evicted("unused")
    agent_port = free_port()
    start_http_server(agent_port, addr="127.0.0.1", registry=agent.registry)
    ray_target = server["metrics"].removeprefix("http://").removesuffix("/metrics")
    prometheus = Prometheus(
        tmp_path,
        static_jobs(
            serving=ray_target,
            operator=f"127.0.0.1:{operator_port}",
            agent=f"127.0.0.1:{agent_port}",
        ),
    )
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            client.completions.create(model=MODEL, prompt="load", max_tokens=8)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        time.sleep(12)  # several scrapes while the load runs
        empty = [
            (title, expr)
            for title, expr in dashboard_exprs()
            if not prometheus.query(expr.replace("$namespace", ".*").replace("$model", ".*"))
        ]
        assert empty == []
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
        prometheus.close()
