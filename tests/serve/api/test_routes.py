"""The route tables and their router (pure), and the OpenAPI documents written from them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from openapi_spec_validator import validate

from launchkit.core.errors import MethodNotAllowed, NotFound
from launchkit.serve.api.openapi import document
from launchkit.serve.api.routes import (
    INFERENCE_ROUTES, MANAGEMENT_ROUTES, METRICS_ROUTES, ErrorShape, Route, Router,
)

TABLES = {"inference": INFERENCE_ROUTES, "management": MANAGEMENT_ROUTES, "metrics": METRICS_ROUTES}
# what a user may name a model: anything one path segment holds (no '/', and under /v1 no ':')
NAMES = st.text(st.characters(blacklist_characters="/:", blacklist_categories=("Cs",)), min_size=1, max_size=20)


@pytest.mark.parametrize("api", TABLES)
def test_each_document_is_valid_openapi_and_lists_every_route(api):
    described = document(api)
    validate(described)  # raises on any error against the OpenAPI 3.0 schema
    listed = {(method.upper(), path) for path, methods in described["paths"].items() for method in methods}
    assert listed == {(route.method, route.template) for route in TABLES[api]}
    ids = [op["operationId"] for methods in described["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)), "operationIds are unique"


@pytest.mark.parametrize("api", TABLES)
def test_every_route_documents_its_errors_in_its_own_shape(api):
    for route in TABLES[api]:
        for answer in route.answers:
            if answer.status >= 400 and answer.schema is not None and "Error" in answer.schema:
                expected = "KServeError" if route.errors is ErrorShape.KSERVE else "TorchServeError"
                assert answer.schema == expected, (route.template, answer)
        if route.token:
            assert any(answer.status == 401 for answer in route.answers) or api == "metrics", route.template


@pytest.mark.parametrize("api", TABLES)
@given(name=NAMES, version=NAMES)
def test_a_filled_template_matches_its_own_route(api, name, version):
    router = Router(TABLES[api])
    for route in TABLES[api]:
        path = route.template.replace("{model_name}", name).replace("{model_version}", version)
        matched, params = router.match(route.method, path)
        expected = {key: value for key, value in (("model_name", name), ("model_version", version))
                    if key in route.path_params}
        # a static path shadows a model of that name ("/v2/models/stats"), as before: the table orders them
        if matched is not route:
            assert (route.template, name) == ("/v2/models/{model_name}", "stats"), (route, path)
            continue
        assert params == expected


def test_the_router_says_not_found_and_which_methods_are_allowed():
    router = Router(INFERENCE_ROUTES)
    with pytest.raises(NotFound, match="no such endpoint: GET /nowhere"):
        router.match("GET", "/nowhere")
    with pytest.raises(MethodNotAllowed) as refused:
        router.match("GET", "/predictions/echo")
    assert refused.value.allowed == "POST, PUT"
    with pytest.raises(NotFound):
        router.match("POST", "/v1/models/echo:explain")  # v1 has :predict only
    with pytest.raises(NotFound):
        router.match("GET", "/v2/models/echo/extra/path")
    assert router.match("GET", "/v2//models/echo/")[1] == {"model_name": "echo"}  # empty segments are ignored
    assert router.error_shape("/v2/nowhere") is ErrorShape.KSERVE
    assert router.error_shape("/nowhere") is ErrorShape.TORCHSERVE


def test_a_route_declared_twice_is_refused():
    twice = (Route("GET", "/x", "x", "x", "t", ()), Route("GET", "/x", "y", "y", "t", ()))
    with pytest.raises(ValueError, match="declared twice"):
        Router(twice)


def test_management_parameters_come_from_the_table():
    from launchkit.core.errors import BadRequest
    from launchkit.serve.api.management import Query

    register = next(route for route in MANAGEMENT_ROUTES if route.operation == "register")
    query = Query(b"url=echo.mar&batch_size=4&max_batch_delay=2.5", register.query)
    assert (query.number("batch_size"), query.number("max_batch_delay")) == (4, 2.5)
    with pytest.raises(BadRequest, match="batch_size=0 must be at least 1"):
        Query(b"url=x&batch_size=0", register.query).number("batch_size")
    with pytest.raises(BadRequest, match="unknown parameter"):
        Query(b"min_worker=1", register.query)
