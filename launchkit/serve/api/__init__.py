"""The frontend's HTTP APIs, as bare ASGI apps on uvicorn: ``inference`` (/ping, /predictions),
``kserve`` (the Open Inference Protocol routes) and ``kserve_codec`` (tensors ↔ items, pure),
``management``, ``metrics`` (Prometheus), ``responses`` (errors → statuses, JSON replies) and
``http`` (the uvicorn adjustments). No torch here."""
