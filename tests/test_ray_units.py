"""The Ray pieces that need no cluster: the serving scaling plan and its flags, ``serve run`` arguments, the sum of
replicas' metrics, and the batch plan."""

from __future__ import annotations

import argparse

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmchat.batch.ray_executor import RayPlan
from lmchat.errors import ConfigError, InvalidRequestError
from lmchat.server import cli as server_cli
from lmchat.server.admission import Admission
from lmchat.server.metrics import ServerMetrics
from lmchat.server.ray_metrics import merge, render, snapshot
from lmchat.server.ray_options import ServeScaling, scaling_from_args


def parse_serve_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    server_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_fixed_replicas_map_to_num_replicas_and_lmchat_admission():
    options = ServeScaling(replicas=3, gpus_per_replica=1, cpus_per_replica=4).deployment_options(16, 64, 30)
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 1}
    assert options["max_ongoing_requests"] == 16 + 64 + 1  # the replica's own admission answers 429 past that
    assert options["graceful_shutdown_timeout_s"] == 30
    assert options["request_router_config"]["request_router_class"].endswith("ray_routing.LeastBusyRouter")


def test_autoscaling_bounds_map_to_autoscaling_config():
    options = ServeScaling(min_replicas=1, max_replicas=4, replicas=2).deployment_options(8, 0, 5)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 2,
                                             "target_ongoing_requests": 8}
    scale_to_zero = ServeScaling(min_replicas=0, max_replicas=2, target_ongoing_requests=3).deployment_options(8, 0, 5)
    assert scale_to_zero["autoscaling_config"]["initial_replicas"] == 1  # the first load happens at start
    assert scale_to_zero["autoscaling_config"]["target_ongoing_requests"] == 3


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 0}, "--replicas must be at least 1"),
    ({"min_replicas": 2}, "--min-replicas needs --max-replicas"),
    ({"min_replicas": 3, "max_replicas": 2}, r"--min-replicas \(3\) is above --max-replicas \(2\)"),
    ({"replicas": 5, "max_replicas": 2}, r"--replicas \(5\) must lie between"),
    ({"replicas": 2, "target_ongoing_requests": 4}, "--target-ongoing-requests needs --max-replicas"),
    ({"replicas": 2, "cpus_per_replica": 0}, "--cpus-per-replica must be more than 0"),
])
def test_bad_scaling_is_a_clear_error(values, message):
    with pytest.raises(ConfigError, match=message):
        ServeScaling(**values)


def test_serve_flags_choose_ray_only_when_asked():
    assert scaling_from_args(parse_serve_flags()) is None  # one process, as before
    scaling = scaling_from_args(parse_serve_flags("--replicas", "2", "--gpus-per-replica", "0.5"))
    assert (scaling.replicas, scaling.gpus_per_replica, scaling.autoscaling) == (2, 0.5, False)
    assert scaling_from_args(parse_serve_flags("--max-replicas", "3")).autoscaling
    assert scaling_from_args(parse_serve_flags("--ray-address", "auto")).ray_address == "auto"
    with pytest.raises(ConfigError, match="--gpus-per-replica only applies on Ray Serve"):
        scaling_from_args(parse_serve_flags("--gpus-per-replica", "1"))
    with pytest.raises(ConfigError, match="--target-ongoing-requests needs --max-replicas"):
        scaling_from_args(parse_serve_flags("--target-ongoing-requests", "2"))


def test_serve_run_arguments_split_into_model_server_and_scaling():
    pytest.importorskip("ray.serve")
    from lmchat.server.ray_serve import builder_args

    model, settings, scaling = builder_args({
        "model_name_or_path": "org/model", "temperature": "0.5", "replicas": "2", "max_replicas": "4",
        "api_keys": "k1, k2", "served_model_names": "a,b", "max_concurrent": "8", "log_prompts": "true",
    }, environ={"LMCHAT_API_KEY": "from-env"})
    assert model == {"model_name_or_path": "org/model", "temperature": "0.5"}
    assert (settings.api_keys, settings.served_model_names, settings.max_concurrent, settings.log_prompts) == (
        ("k1", "k2"), ("a", "b"), 8, True)
    assert (scaling.replicas, scaling.max_replicas) == (2, 4)
    nested, settings, _ = builder_args({"model": {"model_name_or_path": "m", "top_k": 5}, "replicas": 1},
                                       environ={"LMCHAT_API_KEY": "from-env"})
    assert nested == {"model_name_or_path": "m", "top_k": 5}
    assert settings.api_keys == ("from-env",)  # as the CLI: the environment's key when none is given
    assert not settings.accept_any_model
    _, settings, _ = builder_args({"model_name_or_path": "m"}, environ={"API_KEY": "lf-key", "API_MODEL_NAME": "gpt"})
    assert (settings.api_keys, settings.served_model_names, settings.accept_any_model) == (("lf-key",), ("gpt",), True)
    _, settings, _ = builder_args({"model_name_or_path": "m", "api_keys": "mine", "accept_any_model": "false"},
                                  environ={"API_KEY": "lf-key"})
    assert (settings.api_keys, settings.accept_any_model) == (("mine",), False)  # arguments win, as flags do
    with pytest.raises(ConfigError, match="temprature"):
        builder_args({"model_name_or_path": "m", "temprature": "0.5"})
    with pytest.raises(ConfigError, match="beside 'model': top_k"):
        builder_args({"model": {"model_name_or_path": "m"}, "top_k": 5})
    with pytest.raises(ConfigError, match="Expected a number, got 'two'"):
        builder_args({"replicas": "two"})


def replica_metrics(chat_requests: int, running: int, ttft: float) -> ServerMetrics:
    admission = Admission(4, 4)
    admission.running = running
    metrics = ServerMetrics(admission, "m")
    for _ in range(chat_requests):
        metrics.count_request("/v1/chat/completions", 200)
    metrics.time_to_first_token.observe(ttft)
    return metrics


def samples_of(text: bytes) -> dict[tuple, float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text.decode()) for sample in family.samples}


def test_metrics_of_replicas_sum_to_one_process_view():
    first, second = replica_metrics(3, 2, 0.02), replica_metrics(4, 1, 3.0)
    merged = samples_of(render(merge([(snapshot(first.registry), True), (snapshot(second.registry), True)])))
    chat = ("lmchat_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))
    assert merged[chat] == 7
    assert merged[("lmchat_requests_running", (("model_name", "m"),))] == 3
    assert merged[("lmchat_time_to_first_token_seconds_count", (("model_name", "m"),))] == 2
    assert merged[("lmchat_time_to_first_token_seconds_sum", (("model_name", "m"),))] == pytest.approx(3.02)
    assert merged[("lmchat_time_to_first_token_seconds_bucket", (("le", "0.025"), ("model_name", "m")))] == 1
    assert merged[("lmchat_time_to_first_token_seconds_bucket", (("le", "+Inf"), ("model_name", "m")))] == 2
    created = ("lmchat_requests_created", (("route", "/v1/chat/completions"), ("status", "200")))
    assert merged[created] == min(samples_of(first.render())[created], samples_of(second.render())[created])
    assert set(merged) == set(samples_of(first.render()))  # the same metric names and labels as one process


def test_a_silent_replica_keeps_its_totals_but_not_its_gauges():
    live, gone = replica_metrics(1, 1, 0.1), replica_metrics(5, 4, 0.1)
    merged = samples_of(render(merge([(snapshot(live.registry), True), (snapshot(gone.registry), False)])))
    assert merged[("lmchat_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))] == 6
    assert merged[("lmchat_requests_running", (("model_name", "m"),))] == 1


def test_batch_plan_keeps_each_engine_busy_between_batches():
    plan = RayPlan(replicas=2, concurrency=64)
    assert (plan.calls_per_replica, plan.batch_size) == (2, 32)  # two batches of 32 in flight per replica
    assert (RayPlan(concurrency=1).calls_per_replica, RayPlan(concurrency=1).batch_size) == (1, 1)
    assert (RayPlan(concurrency=5).batch_size) == 3
    with pytest.raises(InvalidRequestError, match="gpus_per_replica must be 0 or more"):
        RayPlan(gpus_per_replica=-1)
