from __future__ import annotations

import pytest

from launchkit.core.errors import UsageError
from launchkit.serve.properties import parse_properties
from launchkit.model.spec import OptimizationSpec, parse_spec
from launchkit.serve.settings import (Address, ModelOverrides, ModelSettings, ServerConfig, ServerFlags,
                                      config_from_properties, model_settings, server_config)

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
    ("inference_address=http://127.0.0.1:808[", "not an address"),  # found by fuzz/run.py (a ValueError escaped)
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


# -- the one precedence, a source at a time (serve/settings.py's docstring; docs/serving.md "Settings") -------------

PROPERTIES = config_from_properties(parse_properties(
    'default_workers_per_model=2\njob_queue_size=50\ndefault_response_timeout=60\n'
    'models={"m": {"1.0": {"batchSize": 4, "maxBatchDelay": 20, "optimization": "bf16"}}}'), "config.properties")
ARCHIVE = {"batchSize": 8, "optimization": {"dtype": "fp32", "channels_last": True, "graph": "torchscript"}}
FLAGS = ModelOverrides(batch_size=16, optimization=parse_spec("int8"))
API = ModelOverrides(batch_size=32, workers=3)


def test_defaults_apply_when_no_source_says_anything():
    settings = model_settings(ServerConfig(), "m", "1.0", {})
    assert settings == ModelSettings()  # batch 1, delay 100 ms, 1 worker, 120 s, queue 100, fp32 eager


def test_config_properties_server_keys_beat_defaults():
    settings = model_settings(PROPERTIES, "other", "1.0", {})
    assert (settings.workers, settings.job_queue_size, settings.response_timeout_s) == (2, 50, 60.0)
    assert settings.batch_size == 1  # models={} names only "m"


def test_config_properties_models_beat_its_server_keys():
    settings = model_settings(PROPERTIES, "m", "1.0", {})
    assert (settings.batch_size, settings.max_batch_delay_ms, settings.optimization.dtype) == (4, 20.0, "bf16")
    assert settings.workers == 2  # not said per model: the server-wide key stays


def test_the_archives_model_config_beats_config_properties():
    settings = model_settings(PROPERTIES, "m", "1.0", ARCHIVE)
    assert settings.batch_size == 8
    assert settings.optimization == OptimizationSpec("fp32", True, "torchscript")  # optimization, too
    assert settings.max_batch_delay_ms == 20.0  # the archive does not say: config.properties stays


def test_command_line_flags_beat_the_archive():
    settings = model_settings(PROPERTIES, "m", "1.0", ARCHIVE, (FLAGS,))
    assert settings.batch_size == 16 and settings.optimization.dtype == "int8"


def test_the_management_api_beats_the_command_line():
    settings = model_settings(PROPERTIES, "m", "1.0", ARCHIVE, (FLAGS, API))
    assert (settings.batch_size, settings.workers, settings.optimization.dtype) == (32, 3, "int8")


def test_ipex_enable_survives_every_per_model_optimization():
    config = config_from_properties({"ipex_enable": "true"}, "c")
    assert model_settings(config, "m", "1.0", {}).optimization.ipex
    assert model_settings(config, "m", "1.0", ARCHIVE, (FLAGS,)).optimization.ipex


def test_server_settings_environment_beats_the_file_and_flags_beat_both(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("management_token=from-file\ninference_address=http://127.0.0.1:9000\nmodel_store=/a\n")
    config = server_config(ServerFlags(ts_config=str(path)), environ={})
    assert (config.management_token, config.inference_address.port, str(config.model_store)) == ("from-file", 9000, "/a")
    config = server_config(ServerFlags(ts_config=str(path), inference_address="127.0.0.1:9100", model_store="/b"),
                           environ={"LAUNCHKIT_MANAGEMENT_TOKEN": "from-env"})
    assert (config.management_token, config.inference_address.port, str(config.model_store)) == ("from-env", 9100, "/b")


def test_management_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(UsageError, match="LAUNCHKIT_MANAGEMENT_TOKEN"):
        server_config(ServerFlags(management_address="http://0.0.0.0:8081"), environ={})
    assert server_config(ServerFlags(management_address="http://0.0.0.0:8081"),
                         environ={"LAUNCHKIT_MANAGEMENT_TOKEN": "t"}).management_token == "t"
