"""The default handlers' pieces, checked by definition: torchvision's resize/crop arithmetic, the
text cleaning TorchServe's text handler does, its label mapping forms, and the metrics API."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from launchkit.serve.worker.builtin_text import basic_english, expand_contractions, with_ngrams
from launchkit.model.images import center_crop, normalize, resize_shorter, to_tensor
from launchkit.serve.worker.handler_api import load_label_mapping, map_class_to_label
from launchkit.serve.worker.metrics_api import Dimension, HandlerMetricsCache, MetricsCacheError, MetricTypes


@pytest.mark.parametrize("size,resized", [((320, 240), (341, 256)), ((240, 320), (256, 341)), ((256, 256), (256, 256)),
                                          ((1000, 300), (853, 256))])
def test_resize_makes_the_shorter_side_256_and_truncates_the_longer(size, resized):
    assert resize_shorter(Image.new("RGB", size), 256).size == resized


def test_center_crop_and_to_tensor_and_normalize():
    image = Image.new("RGB", (341, 256))
    image.putpixel((58, 16), (255, 0, 51))  # (341-224)/2 = 58.5 rounds to 58; (256-224)/2 = 16
    crop = center_crop(image, 224)
    assert crop.size == (224, 224) and crop.getpixel((0, 0)) == (255, 0, 51)
    tensor = to_tensor(crop)
    assert tensor.shape == (3, 224, 224) and tensor[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    normalized = normalize(tensor)
    assert normalized[0, 0, 0].item() == pytest.approx((1.0 - 0.485) / 0.229)
    assert normalized[2, 0, 0].item() == pytest.approx((0.2 - 0.406) / 0.225)


def test_text_cleaning_as_torchserve_does_it():
    assert expand_contractions("I don't think they'll go; can't we? Won't") == \
        "I do not think they will go; cannot we? Will not"
    assert basic_english("Hello, World! (A test.)") == ["hello", ",", "world", "!", "(", "a", "test", ".", ")"]
    assert with_ngrams(["here", "we", "are"], 2) == ["here", "we", "are", "here we", "we are"]


def test_label_mappings_in_torchserves_forms(tmp_path):
    plain, imagenet, listed = (tmp_path / name for name in ("a.json", "b.json", "c.json"))
    plain.write_text(json.dumps({"0": "cat", "1": "dog"}))
    imagenet.write_text(json.dumps({"0": ["n02123045", "tabby"]}))
    listed.write_text(json.dumps({"object_type_names": ["__background__", "person"]}))
    assert load_label_mapping(str(plain)) == {"0": "cat", "1": "dog"}
    assert load_label_mapping(str(imagenet)) == {"0": "tabby"}
    assert load_label_mapping(str(listed)) == {"0": "__background__", "1": "person"}
    assert load_label_mapping(str(tmp_path / "missing.json")) is None
    assert map_class_to_label([[0.7, 0.2]], {"0": "cat", "1": "dog"}, [[1, 0]]) == [{"dog": 0.7, "cat": 0.2}]
    assert map_class_to_label([[0.25, 0.75]]) == [{"0": 0.25, "1": 0.75}]


def test_the_metrics_api_records_what_torchserve_would_print():
    metrics = HandlerMetricsCache("mnist")
    metrics.set_request_ids({0: "r1"})
    metrics.add_time("InferenceTime", 12.5)
    metrics.add_counter("Seen", 2, dimensions=[Dimension("Source", "camera")])
    metrics.add_size("Payload", 3, None, "kB", metric_type=MetricTypes.COUNTER)
    cached = metrics.add_metric_to_cache("Rows", "count", ["ModelName"], MetricTypes.HISTOGRAM)
    cached.add_or_update(4, ["mnist"])
    cached.add_or_update(4, ["mnist", "extra"])  # wrong number of dimension values: logged, not recorded
    metrics.get_metric("Rows", MetricTypes.HISTOGRAM).add_or_update(2, ["mnist"])
    metrics.add_counter("Negative", -1)  # a counter cannot go down: logged, not recorded
    assert metrics.take_updates() == [
        ("InferenceTime", "ms", "gauge", ("ModelName", "Level"), ("mnist", "Model"), 12.5),
        ("Seen", "count", "counter", ("Source", "ModelName", "Level"), ("camera", "mnist", "Model"), 2.0),
        ("Payload", "kB", "counter", ("ModelName", "Level"), ("mnist", "Model"), 3.0),
        ("Rows", "count", "histogram", ("ModelName",), ("mnist",), 4.0),
        ("Rows", "count", "histogram", ("ModelName",), ("mnist",), 2.0),
    ]
    assert metrics.take_updates() == []
    with pytest.raises(MetricsCacheError, match="timed metric"):
        metrics.add_time("T", 1, unit="minutes")
    with pytest.raises(KeyError, match="add_metric_to_cache"):
        metrics.get_metric("Unknown")


def test_a_tensor_row_is_a_view_of_the_request(monkeypatch):
    from launchkit.serve.tensors import encode_row
    from launchkit.serve.worker.codec import decode_row

    raw = torch.arange(6, dtype=torch.float32).numpy().tobytes()
    body = bytearray(encode_row([{"name": "x", "datatype": "FP32", "shape": [2, 3], "size": 24}], [raw]))
    tensor = decode_row(body)
    assert tensor.tolist() == [[0, 1, 2], [3, 4, 5]]
    body[body.index(b"\n") + 1:body.index(b"\n") + 5] = torch.tensor([9.0]).numpy().tobytes()
    assert tensor[0, 0].item() == 9.0  # no copy: the tensor reads the request's own bytes
