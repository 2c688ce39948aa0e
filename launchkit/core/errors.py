"""Every error launchkit raises on purpose, in one tree with one root.

Deep code raises these with a message meant for the user (what was wrong, what was expected,
how to fix it); only the edges decide what an error becomes: the CLI turns it into an exit
status (``launchkit.cli``), the HTTP APIs into a status and a JSON body
(``launchkit.serve.api.responses``). Nothing here knows about either.

    LaunchkitError
    ├── UsageError                 bad flags, values, files or settings          (CLI exit 2)
    │   ├── PlanError              a launch plan this machine cannot satisfy
    │   ├── CpuListError           a CPU list not in the "0-3,8" notation
    │   ├── SpecError              an optimization spec that does not parse
    │   ├── ArchiveError           a model archive that cannot be used
    │   ├── SourceError            where POST /models?url= points is malformed or unreadable
    │   │   ├── SourceRefused      ... or outside what the policy allows            (HTTP 403)
    │   │   └── SourceMissing      ... or nothing is there                          (HTTP 404)
    │   ├── TopologyError          the machine description (--topology-root) cannot be read at all
    │   ├── InvalidArgument        a Python API argument with a wrong value      (also a ValueError)
    │   └── WrongArgumentType      a Python API argument of a wrong type         (also a TypeError)
    ├── ServeError                 the server cannot run (a port taken, ...)
    ├── RequestError               a request the server turns away
    │   ├── BadRequest             undecodable input, a bad parameter              (HTTP 400)
    │   ├── Unauthorized           no or a wrong token                             (HTTP 401)
    │   ├── Forbidden              a foreign Host or a cross-origin browser request (HTTP 403)
    │   ├── NotFound               no such endpoint                                (HTTP 404)
    │   │   └── ModelNotFound      no such model
    │   │       └── VersionNotFound    ... or no such version of it
    │   ├── MethodNotAllowed                                                       (HTTP 405)
    │   ├── RequestTimeout         the work asked for did not finish in time       (HTTP 408)
    │   ├── Conflict               a name taken, a default version in use          (HTTP 409)
    │   ├── TooLarge               a body over max_request_size                    (HTTP 413)
    │   └── Unavailable            a full queue, no worker ready                   (HTTP 503)
    │       ├── QueueFull
    │       └── NoWorkerReady
    ├── ModelLoadFailed            a model's workers could not be started or could not load it
    ├── AccuracyRefused            launchkit optimize: the result is not accurate enough (exit 4)
    ├── NotFaster                  launchkit optimize: the result is slower than the original (exit 5)
    ├── RequestsFailed             launchkit bench: more requests failed than --max-error-rate (exit 6)
    ├── Regression                 launchkit bench: slower than the baseline             (exit 3)
    └── NoConfiguration            launchkit tune: no configuration meets the constraints (exit 7)

Handlers keep TorchServe's own ``PredictionException`` (part of the handler contract, in
``launchkit.serve.worker.handler_api``); it never leaves the worker.
"""

from __future__ import annotations


class LaunchkitError(Exception):
    """The root: every error launchkit raises on purpose."""


class UsageError(LaunchkitError):
    """Options, values, files or settings that are wrong, contradict each other or name nothing."""


class InvalidArgument(UsageError, ValueError):
    """A Python API argument with a wrong value (the runtime API): a caller catches it as ValueError."""


class WrongArgumentType(UsageError, TypeError):
    """A Python API argument of a wrong type (the runtime API): a caller catches it as TypeError."""


class PlanError(UsageError):
    """A launch plan that cannot be satisfied on this machine."""


class CpuListError(UsageError):
    """A CPU list that is not in the ``0-3,8`` notation."""


class SpecError(UsageError):
    """An optimization spec (dtype, channels_last, graph) that does not parse."""


class ArchiveError(UsageError):
    """A model archive that cannot be used; the message says what is wrong with it."""


class SourceError(UsageError):
    """A registration URL that is malformed or cannot be read."""


class SourceRefused(SourceError):
    """A registration URL the policy (model store, ``allowed_urls``) does not allow."""


class SourceMissing(SourceError):
    """A registration URL that points at nothing."""


class TopologyError(UsageError):
    """The topology root cannot be read at all."""


class ServeError(LaunchkitError):
    """The server cannot run as asked (a port is taken, a listener fails)."""


class RequestError(LaunchkitError):
    """A request the server answers with an error status instead of running it."""


class BadRequest(RequestError):
    pass


class Unauthorized(RequestError):
    """``api`` names the API ("management" or "inference") whose token is missing or wrong."""

    def __init__(self, api: str) -> None:
        super().__init__(
            f"the {api} API needs a token: send 'Authorization: Bearer <token>' with the token the server was "
            f"started with ({api}_token in config.properties or LAUNCHKIT_{api.upper()}_TOKEN)")
        self.api = api


class Forbidden(RequestError):
    pass


class NotFound(RequestError):
    pass


class ModelNotFound(NotFound):
    pass


class VersionNotFound(ModelNotFound):
    pass


class MethodNotAllowed(RequestError):
    """``allowed``: the methods the path takes, for the ``Allow`` header."""

    def __init__(self, message: str, allowed: str) -> None:
        super().__init__(message)
        self.allowed = allowed


class RequestTimeout(RequestError):
    pass


class Conflict(RequestError):
    pass


class TooLarge(RequestError):
    pass


class Unavailable(RequestError):
    pass


class QueueFull(Unavailable):
    pass


class NoWorkerReady(Unavailable):
    pass


class ModelLoadFailed(LaunchkitError):
    """A model's workers could not be started, or could not load the model."""


class AccuracyRefused(LaunchkitError):
    """``launchkit optimize``: the optimized model is too far from the original to be written."""


class NotFaster(LaunchkitError):
    """``launchkit optimize``: the optimized model is measurably slower than the original."""


class RequestsFailed(LaunchkitError):
    """``launchkit bench``: a level's failed requests exceed ``--max-error-rate``."""


class Regression(LaunchkitError):
    """``launchkit bench``/``report compare``: a level regressed beyond ``--fail-on``."""


class NoConfiguration(LaunchkitError):
    """``launchkit tune``: no configuration measured meets the constraints (the report names the closest)."""
