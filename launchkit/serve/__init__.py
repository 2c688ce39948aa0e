"""`launchkit serve`: a model server with TorchServe's archives, handlers and APIs.

By role, lowest first (imports point down; ``tests/test_layers.py`` checks it):

* ``wire`` — the frames between the frontend and its workers (both ends); ``properties`` — the
  config.properties text format.
* ``settings`` — every setting, its sources and their one precedence; ``sources`` — where
  ``POST /models?url=`` may load an archive from.
* ``scheduling/`` — the models a server holds (``registry``) and each one's queue and batching
  policy (``batcher``).
* ``fleet/`` — the workers: their states and the one readiness predicate (``state``), their
  processes and connections (``process``), and their cores planned together (``plan``, ``fleet``).
  ``worker/`` — the worker process itself (the only part that imports torch).
* ``loading`` — from an archive to a served model.
* ``api/`` — the HTTP APIs: inference, KServe v2, management, metrics, error responses, the
  uvicorn adjustments.
* ``server`` — start-up, the start-up report, shutdown.
"""
