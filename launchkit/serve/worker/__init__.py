"""The worker process (``python -m launchkit.serve.worker``): it loads one model's handler and runs
the batches the frontend sends over the wire. ``main`` (the process), ``codec`` (bodies ↔ handler
data), ``handler_api`` (TorchServe's handler contract: Context, BaseHandler, the ``ts`` shim).
Imports torch through the handlers; the frontend never imports this package."""
