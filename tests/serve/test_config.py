from __future__ import annotations

import pytest

from launchkit.core.errors import UsageError
from launchkit.serve.properties import parse_properties
from launchkit.serve.settings import Address, config_from_properties, model_settings

SAMPLE = r"""
# TorchServe style
inference_address=http://0.0.0.0:9090
management_address: http://127.0.0.1:9091
model_store=/models
load_models=tiny.mar,resnet=resnet18.mar
job_queue_size = 7
default_workers_per_model=2
cpu_launcher_enable=true
cpu_launcher_args=--use_logical_core  --node_id 0
number_of_netty_threads=4
made_up_key=1
models={\
  "tiny": {\
    "1.0": {"batchSize": 8, "maxBatchDelay": 5, "minWorkers": 3, "responseTimeout": 10}\
  }\
}
"""


def test_parse_properties_handles_continuations_comments_and_separators():
    entries = parse_properties(SAMPLE)
    assert entries["management_address"] == "http://127.0.0.1:9091"
    assert entries["job_queue_size"] == "7"
    assert entries["models"].replace(" ", "").startswith('{"tiny":{"1.0":{"batchSize":8')


def test_config_from_properties():
    config = config_from_properties(parse_properties(SAMPLE), "config.properties")
    assert config.inference_address == Address("0.0.0.0", 9090)
    assert config.load_models == ("tiny.mar", "resnet=resnet18.mar")
    assert config.job_queue_size == 7 and config.default_workers_per_model == 2
    assert config.cpu_launcher_enable is True and config.cpu_launcher_args == "--use_logical_core  --node_id 0"
    assert any("made_up_key" in warning for warning in config.warnings)
    assert any("number_of_netty_threads" in note for note in config.notes)
    tiny = model_settings(config, "tiny", "1.0", {})
    assert (tiny.batch_size, tiny.max_batch_delay_ms, tiny.workers, tiny.response_timeout_s) == (8, 5.0, 3, 10.0)
    assert tiny.job_queue_size == 7
    other = model_settings(config, "other", "1.0", {"batchSize": 4})
    assert (other.batch_size, other.workers) == (4, 2)
    # model-config.yaml in the archive beats config.properties
    assert model_settings(config, "tiny", "1.0", {"batchSize": 2}).batch_size == 2
    assert config.effective()["inference_address"] == "http://0.0.0.0:9090"


@pytest.mark.parametrize("text, message", [
    ("job_queue_size=lots", "not an integer"),
    ("job_queue_size=0", "at least 1"),
    ("ipex_enable=maybe", "expected true or false"),
    ("inference_address=https://127.0.0.1:8443", "only http://"),
    ("inference_address=http://127.0.0.1", "give a port"),
    ("models={broken", "not valid JSON"),
])
def test_bad_values_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        config_from_properties(parse_properties(text), "c.properties")


def test_bad_model_settings():
    config = config_from_properties({}, "x")
    with pytest.raises(UsageError, match="not a number"):
        model_settings(config, "m", "1", {"batchSize": "big"})
    with pytest.raises(UsageError, match="out of range"):
        model_settings(config, "m", "1", {"batchSize": 0})
