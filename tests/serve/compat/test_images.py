"""Images as TorchServe's examples send them, through the default handlers they name.

A photo (a real 112 KB JPEG) through ``image_classifier`` from curl, and one-channel MNIST PNGs
through a handler built like TorchServe's mnist example (an ``ImageClassifier`` subclass with its
own one-channel transform): the built-in handler must hand that transform the image as opened, not
made RGB.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serve.compat.conftest import archive
from tests.serve.compat.test_default_handlers import _model
from tests.serve.conftest import HANDLERS, Server, free_port

PHOTO = Path(__file__).parents[2] / "fixtures" / "payloads" / "rocket.jpg"

SMALL_CLASSIFIER = """
    import torch
    from torch import nn

    class SmallClassifier(nn.Module):  # ImageNet's input and 1000 classes, few weights
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
            self.fc = nn.Linear(8 * 16, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(self.features(x), 1))
"""


def _reference_tensor(photo: bytes):
    """torchvision's Resize(256), CenterCrop(224), ToTensor, Normalize, written out here with PIL."""
    import torch
    from PIL import Image

    image = Image.open(io.BytesIO(photo)).convert("RGB")
    width, height = image.size
    scale = 256 / min(width, height)
    image = image.resize((int(width * scale), int(height * scale)) if width != height else (256, 256),
                         Image.BILINEAR)
    left, top = round((image.size[0] - 224) / 2), round((image.size[1] - 224) / 2)
    image = image.crop((left, top, left + 224, top + 224))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(224, 224, 3).permute(2, 0, 1) / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (pixels - mean) / std


def _curl(*args: str) -> tuple[int, object]:
    result = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), json.loads(body)


def test_a_photo_through_image_classifier_from_curl(tmp_path):
    import torch

    model_file, weights = _model(tmp_path, SMALL_CLASSIFIER, "small")
    labels = tmp_path / "index_to_name.json"
    labels.write_text(json.dumps({str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}))
    store = tmp_path / "store"
    store.mkdir()
    archive(store, "classifier", "--model-file", str(model_file), "--serialized-file", str(weights),
            "--handler", "image_classifier", "--extra-files", str(labels))

    namespace: dict = {}
    exec(compile(model_file.read_text(), str(model_file), "exec"), namespace)  # noqa: S102 - the test's model
    model = namespace["SmallClassifier"]()
    model.load_state_dict(torch.load(weights))
    photo = PHOTO.read_bytes()
    with torch.no_grad():
        probabilities = torch.softmax(model(_reference_tensor(photo)[None]), dim=1)[0]
    top = torch.topk(probabilities, 5)
    want = {f"class_{index}": value for index, value in zip(top.indices.tolist(), top.values.tolist())}

    with Server(["--model-store", str(store), "--models", "classifier=classifier.mar"], free_port()) as server:
        url = f"http://127.0.0.1:{server.port}/predictions/classifier"
        for args in (["--data-binary", f"@{PHOTO}"], ["-T", str(PHOTO)], ["-F", f"data=@{PHOTO}"],
                     ["-H", "Content-Type: image/jpeg", "--data-binary", f"@{PHOTO}"]):
            status, answer = _curl(*args, url)
            assert status == 200, (args, answer)
            assert list(answer) == list(want), args  # the same five classes, in order
            assert list(answer.values()) == pytest.approx(list(want.values()), abs=2e-3), args


def test_mnist_pngs_through_an_image_classifier_subclass(tmp_path):
    # On launchkit's ts shim only: TorchServe's own ts.torch_handler.image_classifier imports torchvision
    # (and its vision_handler captum), which have no CPU wheel beside torch 2.13 here.
    import torch
    from PIL import Image

    from launchkit.examples import mnist

    model_file = tmp_path / "mnist.py"
    model_file.write_text(Path(mnist.__file__).read_text())
    store = tmp_path / "store"
    store.mkdir()
    archive(store, "mnist", "--model-file", str(model_file), "--serialized-file", str(mnist.WEIGHTS),
            "--handler", str(HANDLERS / "ts_mnist_handler.py"))
    images, labels = mnist.split(*mnist.load_digits(), held_out=True)
    images, labels = images[:24], labels[:24]
    folder = tmp_path / "test_data"
    folder.mkdir()
    for index, image in enumerate(images):  # 28×28 mode "L" PNGs, as TorchServe's test_data/*.png
        pixels = (image[0] * 255).round().to(torch.uint8)
        Image.frombytes("L", (28, 28), bytes(pixels.flatten().tolist())).save(folder / f"{index}.png")
    with torch.no_grad():
        read_back = torch.stack([torch.frombuffer(bytearray(Image.open(folder / f"{i}.png").tobytes()),
                                                  dtype=torch.uint8).view(1, 28, 28) / 255 for i in range(len(images))])
        want = mnist.digit_net()(read_back).argmax(1).tolist()
    assert sum(w == label for w, label in zip(want, labels.tolist())) >= 22  # the weights know these digits

    with Server(["--model-store", str(store), "--models", "mnist=mnist.mar"], free_port()) as server:
        url = f"http://127.0.0.1:{server.port}/predictions/mnist"
        got = []
        for index in range(len(images)):  # TorchServe's README: curl .../predictions/mnist -T test_data/0.png
            status, answer = _curl("-T", str(folder / f"{index}.png"), url)
            assert status == 200, answer
            got.append(answer)
        assert got == want
        status, answer = _curl("--data-binary", f"@{PHOTO}", url)  # an RGB photo: the example's transform refuses it
        assert status >= 400 and "one-channel" in json.dumps(answer), answer
