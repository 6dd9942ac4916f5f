"""The OpenAPI document, told true: what FastAPI derives from the routes, plus the answers
every route can give that it does not see (auth, the service errors and their JSON shape).

Checked by a bounded Schemathesis run in the test suite (tests/test_openapi_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..config import MONITOR_INTERVALS
from ..models import INSTANCE_NAME_RE, NAME_MAX

ERROR = {'$ref': '#/components/schemas/Error'}
ERROR_SCHEMA: dict[str, Any] = {
    'title': 'Error',
    'type': 'object',
    'description': 'A refusal, with a sentence that says why (and sometimes more fields, e.g. `holder`).',
    'properties': {'detail': {'type': 'string'}},
    'required': ['detail'],
    'additionalProperties': True,
}
# A 422 is either a service sentence or FastAPI's list of field errors (a body of the wrong type).
UNPROCESSABLE = {'oneOf': [ERROR, {'$ref': '#/components/schemas/HTTPValidationError'}]}
OPEN_OPERATIONS = {('get', '/health')}
WRITES = {'post', 'put', 'patch', 'delete'}

COMMON: dict[int, str] = {
    401: 'No valid API token or session: send `Authorization: Bearer <token>` (or `?token=`)',
}
FOR_WRITES: dict[int, str] = {
    400: 'The body is not valid JSON',
    403: 'Refused: a session cookie from another origin, or an action the panel never allows',
    409: 'Conflicts with the current state (names the reason, e.g. the instance is running)',
    413: 'The body is larger than the limit',
    415: 'The body is not JSON (or not text for a script)',
    422: 'Invalid input: a sentence, or the list of field errors',
    507: 'The disk of the data directory is full: nothing was changed',
}
FOR_IDS: dict[int, str] = {404: 'No such instance, blueprint or trash entry'}
# Answers of single operations that the rules above do not cover.
SPECIFIC: dict[tuple[str, str], dict[int, str]] = {
    ('post', '/instances'): {404: 'Unknown blueprint'},
}


def build_schema(api: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=api.title, version=api.version, routes=api.routes, servers=[{'url': '/api'}])
    components = schema.setdefault('components', {})
    components['securitySchemes'] = {'bearer': {'type': 'http', 'scheme': 'bearer'}}
    components.setdefault('schemas', {})['Error'] = ERROR_SCHEMA
    components['schemas'].setdefault('HTTPValidationError', _validation_error_schema())
    components['schemas'].setdefault('ValidationError', _field_error_schema())
    schema['security'] = [{'bearer': []}]
    for path, operations in schema.get('paths', {}).items():
        for method, operation in operations.items():
            _complete(operation, method, path)
    _document_limits(components['schemas'])
    return schema


def _complete(operation: dict[str, Any], method: str, path: str) -> None:
    responses: dict[str, Any] = operation.setdefault('responses', {})
    if (method, path) in OPEN_OPERATIONS:
        operation['security'] = []  # open to all: the container's health check calls it
        return
    wanted = dict(COMMON)
    if method in WRITES:
        wanted |= FOR_WRITES
    if '{' in path:
        wanted |= FOR_IDS
    if operation.get('parameters'):
        wanted[422] = FOR_WRITES[422]
    wanted |= SPECIFIC.get((method, path), {})
    for code, description in wanted.items():
        entry = responses.setdefault(str(code), {'description': description})
        entry['content'] = {'application/json': {'schema': UNPROCESSABLE if code == 422 else ERROR}}


def _document_limits(schemas: dict[str, Any]) -> None:
    """The rules the services apply, shown in the schema (the services still answer with their
    own sentence when a value breaks them)."""
    for model in ('InstanceCreate', 'InstanceUpdate', 'CloneRequest', 'SatelliteCreate'):
        name = schemas.get(model, {}).get('properties', {}).get('name')
        if name is not None:
            target = next((option for option in name.get('anyOf', []) if option.get('type') == 'string'), name)
            target.update(pattern=f'^{INSTANCE_NAME_RE.pattern}$', maxLength=NAME_MAX, minLength=1)
    interval = schemas.get('Interval', {}).get('properties', {}).get('interval')
    if interval is not None:
        interval.update(minimum=MONITOR_INTERVALS[0], maximum=MONITOR_INTERVALS[1])


def _validation_error_schema() -> dict[str, Any]:
    return {
        'title': 'HTTPValidationError',
        'type': 'object',
        'properties': {'detail': {'type': 'array', 'items': {'$ref': '#/components/schemas/ValidationError'}}},
    }


def _field_error_schema() -> dict[str, Any]:
    return {
        'title': 'ValidationError',
        'type': 'object',
        'properties': {
            'loc': {'type': 'array', 'items': {'anyOf': [{'type': 'string'}, {'type': 'integer'}]}},
            'msg': {'type': 'string'},
            'type': {'type': 'string'},
        },
        'required': ['loc', 'msg', 'type'],
    }
