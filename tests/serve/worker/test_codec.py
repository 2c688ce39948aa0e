"""Request bodies → what handlers see (serve/worker/codec.py), multipart forms in particular."""

from __future__ import annotations

import pytest

from launchkit.core.errors import BadRequest
from launchkit.serve.wire import ItemRequest
from launchkit.serve.worker.codec import decode_item


def _decode(body: bytes, content_type: str) -> dict:
    return decode_item(ItemRequest("r", body, content_type, []))


def _form(fields: dict[str, tuple[str | None, bytes]], boundary: str = "------------------------06a47a2466578ec3"):
    """A body as curl -F encodes one: CRLF line ends, a filename for file parts."""
    parts = []
    for name, (filename, content) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"Content-Disposition: {disposition}\r\n" + ("Content-Type: image/jpeg\r\n" if filename else "")
        parts.append(f"--{boundary}\r\n{head}\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_multipart_forms_as_clients_encode_them():
    image = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"  # binary, with CRLFs and dashes inside
    body, content_type = _form({"data": ("kitten.jpg", image), "note": (None, b"hello")})
    assert _decode(body, content_type) == {"data": image, "note": b"hello"}
    quoted = body.replace(b"name=\"note\"", b"name=note")  # unquoted names are accepted too
    assert _decode(quoted, content_type.replace("boundary=", 'boundary="') + '"')["note"] == b"hello"


@pytest.mark.parametrize("body,content_type,message", [
    (b"--X\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--X--", "multipart/form-data", "no boundary"),
    (b"--X\r\nContent-Disposition: form-data; name=a\r\n1\r\n--X--", "multipart/form-data; boundary=X", "blank line"),
    (b"--X\r\nContent-Type: text/plain\r\n\r\n1\r\n--X--", "multipart/form-data; boundary=X", "no named fields"),
    (b"no parts at all", "multipart/form-data; boundary=X", "no named fields"),
])
def test_malformed_forms_are_400s(body, content_type, message):
    with pytest.raises(BadRequest, match=message):
        _decode(body, content_type)


def test_an_empty_quoted_field_name_is_a_name_not_a_crash():
    """Found by fuzz/run.py multipart (its input is kept in fuzz/corpus/multipart/): name="" followed by
    more text made the parser call .decode on None, a 500 instead of the form's fields."""
    body = b'--X\r\nContent-Disposition: form-data; name=""outputs"\r\n\r\nhello\r\n--X--\r\n'
    assert _decode(body, "multipart/form-data; boundary=X") == {"": b"hello"}


@pytest.mark.parametrize("body", [b'[{"name": "x"\x83}]\n', b'[{"name": "x", "size": 8}]\n', b"{}\n", b'[1]\n',
                                  b'[{"name": "x", "size": 99, "datatype": "FP32", "shape": [2]}]\n\0\0\0\0'])
def test_a_client_sending_the_internal_row_type_gets_a_400(body):
    """Found by fuzz/run.py multipart: the rows the frontend writes for v2 binary tensors have their own
    content type, which a client can send to /predictions too; a malformed one was a 500."""
    with pytest.raises(BadRequest, match="launchkit's own row format"):
        _decode(body, "application/x-launchkit-tensor-rows")
