"""OpenAPI v2 as protobuf (``openapi_v2_proto``): the gnostic ``openapi_v2.Document`` kubectl 1.20 reads.

The output is decoded with the ``protobuf`` library, through message classes built here at run time
from a table of gnostic's ``openapiv2/OpenAPIv2.proto`` messages (field names, numbers, types,
oneofs), then turned back into Swagger JSON and compared with the JSON document it was encoded from.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from services.apiserver import builtin, openapi, openapi_v2_proto, registry

# -- gnostic's messages, as far as the encoder writes them --------------------------------------------
# "name=number:type": type defaults to string; "*" marks a repeated field, "?" a member of the
# message's oneof (called "oneof" in gnostic). Any.value (a google.protobuf.Any) is never written.

_PARAMETER_HEAD = "required=1:bool in=2 description=3 name=4"
_PATH_OR_HEADER = (
    f"{_PARAMETER_HEAD} type=5 format=6 items=7:PrimitivesItems collection_format=8 default=9:Any"
    " maximum=10:double exclusive_maximum=11:bool minimum=12:double exclusive_minimum=13:bool"
    " max_length=14:int64 min_length=15:int64 pattern=16 max_items=17:int64 min_items=18:int64"
    " unique_items=19:bool enum=20:*Any multiple_of=21:double vendor_extension=22:*NamedAny"
)
_QUERY_OR_FORM = (
    f"{_PARAMETER_HEAD} allow_empty_value=5:bool type=6 format=7 items=8:PrimitivesItems"
    " collection_format=9 default=10:Any maximum=11:double exclusive_maximum=12:bool minimum=13:double"
    " exclusive_minimum=14:bool max_length=15:int64 min_length=16:int64 pattern=17 max_items=18:int64"
    " min_items=19:int64 unique_items=20:bool enum=21:*Any multiple_of=22:double"
    " vendor_extension=23:*NamedAny"
)
MESSAGES = {
    "AdditionalPropertiesItem": "?schema=1:Schema ?boolean=2:bool",
    "Any": "yaml=2",
    "ApiKeySecurity": "type=1 name=2 in=3 description=4 vendor_extension=5:*NamedAny",
    "BasicAuthenticationSecurity": "type=1 description=2 vendor_extension=3:*NamedAny",
    "BodyParameter": (
        "description=1 name=2 in=3 required=4:bool schema=5:Schema vendor_extension=6:*NamedAny"
    ),
    "Definitions": "additional_properties=1:*NamedSchema",
    "Document": (
        "swagger=1 info=2:Info host=3 base_path=4 schemes=5:*string consumes=6:*string"
        " produces=7:*string paths=8:Paths definitions=9:Definitions security=12:*SecurityRequirement"
        " security_definitions=13:SecurityDefinitions tags=14:*Tag external_docs=15:ExternalDocs"
        " vendor_extension=16:*NamedAny"
    ),
    "ExternalDocs": "description=1 url=2 vendor_extension=3:*NamedAny",
    "FileSchema": (
        "format=1 title=2 description=3 default=4:Any required=5:*string type=6 read_only=7:bool"
        " external_docs=8:ExternalDocs example=9:Any vendor_extension=10:*NamedAny"
    ),
    "FormDataParameterSubSchema": _QUERY_OR_FORM,
    "HeaderParameterSubSchema": _PATH_OR_HEADER,
    "Info": "title=1 version=2 description=3 terms_of_service=4 vendor_extension=7:*NamedAny",
    "ItemsItem": "schema=1:*Schema",
    "JsonReference": "_ref=1 description=2",
    "NamedAny": "name=1 value=2:Any",
    "NamedPathItem": "name=1 value=2:PathItem",
    "NamedResponseValue": "name=1 value=2:ResponseValue",
    "NamedSchema": "name=1 value=2:Schema",
    "NamedSecurityDefinitionsItem": "name=1 value=2:SecurityDefinitionsItem",
    "NamedStringArray": "name=1 value=2:StringArray",
    "NonBodyParameter": (
        "?header_parameter_sub_schema=1:HeaderParameterSubSchema"
        " ?form_data_parameter_sub_schema=2:FormDataParameterSubSchema"
        " ?query_parameter_sub_schema=3:QueryParameterSubSchema"
        " ?path_parameter_sub_schema=4:PathParameterSubSchema"
    ),
    "Operation": (
        "tags=1:*string summary=2 description=3 external_docs=4:ExternalDocs operation_id=5"
        " produces=6:*string consumes=7:*string parameters=8:*ParametersItem responses=9:Responses"
        " schemes=10:*string deprecated=11:bool security=12:*SecurityRequirement"
        " vendor_extension=13:*NamedAny"
    ),
    "Parameter": "?body_parameter=1:BodyParameter ?non_body_parameter=2:NonBodyParameter",
    "ParametersItem": "?parameter=1:Parameter ?json_reference=2:JsonReference",
    "PathItem": (
        "_ref=1 get=2:Operation put=3:Operation post=4:Operation delete=5:Operation options=6:Operation"
        " head=7:Operation patch=8:Operation parameters=9:*ParametersItem vendor_extension=10:*NamedAny"
    ),
    "PathParameterSubSchema": _PATH_OR_HEADER,
    "Paths": "vendor_extension=1:*NamedAny path=2:*NamedPathItem",
    "PrimitivesItems": (
        "type=1 format=2 items=3:PrimitivesItems collection_format=4 default=5:Any maximum=6:double"
        " exclusive_maximum=7:bool minimum=8:double exclusive_minimum=9:bool max_length=10:int64"
        " min_length=11:int64 pattern=12 max_items=13:int64 min_items=14:int64 unique_items=15:bool"
        " enum=16:*Any multiple_of=17:double vendor_extension=18:*NamedAny"
    ),
    "Properties": "additional_properties=1:*NamedSchema",
    "QueryParameterSubSchema": _QUERY_OR_FORM,
    "Response": "description=1 schema=2:SchemaItem vendor_extension=5:*NamedAny",
    "ResponseValue": "?response=1:Response ?json_reference=2:JsonReference",
    "Responses": "response_code=1:*NamedResponseValue vendor_extension=2:*NamedAny",
    "Schema": (
        "_ref=1 format=2 title=3 description=4 default=5:Any multiple_of=6:double maximum=7:double"
        " exclusive_maximum=8:bool minimum=9:double exclusive_minimum=10:bool max_length=11:int64"
        " min_length=12:int64 pattern=13 max_items=14:int64 min_items=15:int64 unique_items=16:bool"
        " max_properties=17:int64 min_properties=18:int64 required=19:*string enum=20:*Any"
        " additional_properties=21:AdditionalPropertiesItem type=22:TypeItem items=23:ItemsItem"
        " all_of=24:*Schema properties=25:Properties discriminator=26 read_only=27:bool"
        " external_docs=29:ExternalDocs example=30:Any vendor_extension=31:*NamedAny"
    ),
    "SchemaItem": "?schema=1:Schema ?file_schema=2:FileSchema",
    "SecurityDefinitions": "additional_properties=1:*NamedSecurityDefinitionsItem",
    "SecurityDefinitionsItem": (
        "?basic_authentication_security=1:BasicAuthenticationSecurity ?api_key_security=2:ApiKeySecurity"
    ),
    "SecurityRequirement": "additional_properties=1:*NamedStringArray",
    "StringArray": "value=1:*string",
    "Tag": "name=1 description=2 external_docs=3:ExternalDocs vendor_extension=4:*NamedAny",
    "TypeItem": "value=1:*string",
}
_F = descriptor_pb2.FieldDescriptorProto
SCALARS = {"string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "int64": _F.TYPE_INT64, "double": _F.TYPE_DOUBLE}


def _document_class() -> type:
    proto = descriptor_pb2.FileDescriptorProto(name="gnostic_openapiv2_test.proto", package="openapi.v2")
    proto.syntax = "proto3"
    for name, fields in MESSAGES.items():
        message = proto.message_type.add(name=name)
        for token in fields.split():
            field_name, _, rest = token.lstrip("?").partition("=")
            number, _, kind = rest.partition(":")
            kind = kind or "string"
            field = message.field.add(name=field_name, number=int(number))
            field.label = _F.LABEL_REPEATED if kind.startswith("*") else _F.LABEL_OPTIONAL
            kind = kind.lstrip("*")
            if kind in SCALARS:
                field.type = SCALARS[kind]
            else:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".openapi.v2.{kind}"
            if token.startswith("?"):
                if not message.oneof_decl:
                    message.oneof_decl.add(name="oneof")
                field.oneof_index = 0
    _POOL.Add(proto)
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName("openapi.v2.Document"))


# Built once: a pool takes a file only once.
_POOL = descriptor_pool.DescriptorPool()
DOCUMENT = _document_class()


@pytest.fixture(scope="module")
def document_class() -> type:
    return DOCUMENT


def decode(document_class: type, data: bytes) -> Any:
    doc = document_class()
    doc.ParseFromString(data)
    return doc


# -- back to Swagger JSON ---------------------------------------------------------------------------


def _camel(name: str) -> str:
    if name == "_ref":
        return "$ref"
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_json(message: Any) -> Any:
    """A decoded gnostic message as the Swagger JSON it stands for."""
    descriptor = message.DESCRIPTOR
    name = descriptor.name
    if descriptor.oneofs:  # a wrapper: its set member is the value
        member = message.WhichOneof("oneof")
        return None if member is None else to_json_value(getattr(message, member))
    if name == "Any":
        return yaml.safe_load(message.yaml)
    if name in ("StringArray", "TypeItem"):
        values = list(message.value)
        return values[0] if name == "TypeItem" and len(values) == 1 else values
    if name == "ItemsItem":
        schemas = [to_json(s) for s in message.schema]
        return schemas[0] if len(schemas) == 1 else schemas
    if [f.name for f in descriptor.fields] == ["additional_properties"]:  # a map
        return {entry.name: to_json_value(entry.value) for entry in message.additional_properties}
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.name == "vendor_extension":
            out.update({entry.name: to_json(entry.value) for entry in value})
        elif name == "Paths" and field.name == "path":
            out.update({entry.name: to_json(entry.value) for entry in value})
        elif name == "Responses" and field.name == "response_code":
            out.update({entry.name: to_json(entry.value) for entry in value})
        elif field.is_repeated:
            out[_camel(field.name)] = [to_json_value(v) for v in value]
        else:
            out[_camel(field.name)] = to_json_value(value)
    return out


def to_json_value(value: Any) -> Any:
    return to_json(value) if hasattr(value, "DESCRIPTOR") else value


# -- the built-in document ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> openapi.OpenAPI:
    return openapi.OpenAPI(registry.Registry(builtin.builtin_resources()))


def test_built_in_document_round_trips(api: openapi.OpenAPI, document_class: type) -> None:
    data = api.v2_protobuf()
    doc = decode(document_class, data)
    # written as protobuf writes it: fields in number order, no defaults, nothing unknown
    assert doc.SerializeToString(deterministic=True) == data
    assert to_json(doc) == orjson.loads(api.v2_json())


def test_what_kubectl_120_reads(api: openapi.OpenAPI, document_class: type) -> None:
    doc = decode(document_class, api.v2_protobuf())
    assert doc.swagger == "2.0" and doc.info.title == "Kubernetes"
    definitions = {entry.name: entry.value for entry in doc.definitions.additional_properties}

    # validation and explain find a kind through its definition's GVK extension (a YAML list)
    pod = definitions["io.k8s.api.core.v1.Pod"]
    extensions = {e.name: e.value.yaml for e in pod.vendor_extension}
    assert yaml.safe_load(extensions["x-kubernetes-group-version-kind"]) == [
        {"group": "", "kind": "Pod", "version": "v1"}
    ]
    assert list(pod.type.value) == ["object"]
    fields = {p.name: p.value for p in pod.properties.additional_properties}
    assert fields["spec"]._ref == "#/definitions/io.k8s.api.core.v1.PodSpec"

    # apply's strategic merge keys, and the shapes kube-openapi parses: arrays with one item
    # schema, maps through additionalProperties, required fields
    spec = {
        p.name: p.value for p in definitions["io.k8s.api.core.v1.PodSpec"].properties.additional_properties
    }
    containers = spec["containers"]
    assert list(containers.type.value) == ["array"] and len(containers.items.schema) == 1
    assert containers.items.schema[0]._ref == "#/definitions/io.k8s.api.core.v1.Container"
    merge = {e.name: yaml.safe_load(e.value.yaml) for e in containers.vendor_extension}
    assert merge["x-kubernetes-patch-merge-key"] == "name"
    assert merge["x-kubernetes-patch-strategy"] == "merge"
    assert merge["x-kubernetes-list-map-keys"] == ["name"]
    assert spec["nodeSelector"].additional_properties.schema.type.value == ["string"]
    assert "containers" in definitions["io.k8s.api.core.v1.PodSpec"].required
    port = definitions["io.k8s.api.core.v1.ContainerPort"]
    assert list(port.required) == ["containerPort"]
    assert list(definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"].type.value) == ["string"]

    # every reference resolves: kube-openapi rejects the whole document otherwise
    def refs(schema: Any) -> list[str]:
        found = [schema._ref] if schema._ref else []
        for entry in schema.properties.additional_properties:
            found += refs(entry.value)
        for item in schema.items.schema:
            found += refs(item)
        if schema.additional_properties.WhichOneof("oneof") == "schema":
            found += refs(schema.additional_properties.schema)
        return found

    found = [ref for schema in definitions.values() for ref in refs(schema)]
    assert len(found) > 500
    for ref in found:
        assert ref.removeprefix("#/definitions/") in definitions, ref


def _supports_dry_run(doc: Any, gvk: dict[str, str]) -> bool | None:
    """kubectl 1.20's check (``openapi.SupportsDryRun``): the first path whose PATCH carries the
    kind's GVK extension decides, by declaring the query parameter ``dryRun`` or not."""
    for entry in doc.paths.path:
        patch = entry.value.patch
        found = [e for e in patch.vendor_extension if e.name == "x-kubernetes-group-version-kind"]
        if not found or yaml.safe_load(found[0].value.yaml) != gvk:
            continue
        names = [p.parameter.non_body_parameter.query_parameter_sub_schema.name for p in patch.parameters]
        return "dryRun" in names
    return None


@pytest.mark.parametrize(
    "gvk",
    [
        {"group": "", "kind": "Pod", "version": "v1"},
        {"group": "", "kind": "Namespace", "version": "v1"},  # 1.20 asks this one for custom resources
        {"group": "", "kind": "ConfigMap", "version": "v1"},
        {"group": "apps", "kind": "Deployment", "version": "v1"},
        {"group": "k3s.cattle.io", "kind": "Addon", "version": "v1"},
    ],
    ids=lambda gvk: gvk["kind"],
)
def test_patch_operations_declare_dry_run(api: openapi.OpenAPI, document_class: type, gvk: dict) -> None:
    assert _supports_dry_run(decode(document_class, api.v2_protobuf()), gvk) is True


def test_operations(api: openapi.OpenAPI, document_class: type) -> None:
    doc = decode(document_class, api.v2_protobuf())
    paths = {entry.name: entry.value for entry in doc.paths.path}
    item = paths["/api/v1/namespaces/{namespace}/pods/{name}"]
    for method in ("get", "put", "patch", "delete"):
        assert item.HasField(method), method
    assert not item.HasField("post")
    path_params = [p.parameter.non_body_parameter.path_parameter_sub_schema for p in item.parameters]
    assert {(p.name, p.required, p.type) for p in path_params if p.name} == {
        ("name", True, "string"),
        ("namespace", True, "string"),
    }
    patch = item.patch
    assert set(patch.consumes) == set(openapi.PATCH_TYPES)
    body = [p.parameter.body_parameter for p in patch.parameters if p.parameter.HasField("body_parameter")]
    assert len(body) == 1 and body[0].required and body[0].schema._ref.endswith("meta.v1.Patch")
    query = {
        q.name: q.type
        for p in patch.parameters
        if (q := p.parameter.non_body_parameter.query_parameter_sub_schema).name
    }
    assert query["dryRun"] == "string" and query["force"] == "boolean"
    codes = {r.name: r.value.response for r in patch.responses.response_code}
    assert codes["200"].schema.schema._ref == "#/definitions/io.k8s.api.core.v1.Pod"
    actions = {e.name: yaml.safe_load(e.value.yaml) for e in patch.vendor_extension}
    assert actions["x-kubernetes-action"] == "patch"


def test_security(api: openapi.OpenAPI, document_class: type) -> None:
    doc = decode(document_class, api.v2_protobuf())
    [requirement] = doc.security
    assert [(e.name, list(e.value.value)) for e in requirement.additional_properties] == [("BearerToken", [])]
    [scheme] = doc.security_definitions.additional_properties
    assert scheme.name == "BearerToken"
    assert scheme.value.api_key_security.name == "authorization"
    assert getattr(scheme.value.api_key_security, "in") == "header"


# -- caching and serving ----------------------------------------------------------------------------


def test_cached_until_the_registry_changes(document_class: type) -> None:
    reg = registry.Registry(builtin.builtin_resources())
    api = openapi.OpenAPI(reg)
    api.v2_json()
    started = time.perf_counter()
    first = api.v2_protobuf()
    encode_time = time.perf_counter() - started
    started = time.perf_counter()
    assert api.v2_protobuf() is first
    cached_time = time.perf_counter() - started
    print(
        f"v2 protobuf: {len(first)} bytes, first {encode_time * 1000:.1f} ms, cached {cached_time * 1e6:.1f} us"
    )

    reg.add(
        [
            registry.ResourceInfo(
                group="stable.example.com",
                version="v1",
                kind="CronTab",
                plural="crontabs",
                singular="crontab",
                namespaced=True,
                verbs=builtin.CRUD,
                custom=True,
                schema={"type": "object", "properties": {"spec": {"type": "object"}}},
            )
        ]
    )
    second = api.v2_protobuf()
    assert second != first
    names = {entry.name for entry in decode(document_class, second).definitions.additional_properties}
    assert "com.example.stable.v1.CronTab" in names
    gvk = {"group": "stable.example.com", "kind": "CronTab", "version": "v1"}
    assert _supports_dry_run(decode(document_class, second), gvk) is True


def test_respond(document_class: type) -> None:
    reg = registry.Registry(builtin.builtin_resources())
    response = openapi.respond(
        reg, "/openapi/v2", accept="application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    )
    assert response.status == 200 and response.content_type == openapi.PROTOBUF_V2
    assert decode(document_class, response.body).definitions.additional_properties


# -- schemas kubectl 1.20 could not parse, and the rest of the format ------------------------------


def _schema_of(document_class: type, schema: dict, *, others: dict | None = None) -> Any:
    doc = {"swagger": "2.0", "definitions": {"T": schema, **(others or {})}}
    decoded = decode(document_class, openapi_v2_proto.encode(doc))
    return to_json(decoded)["definitions"]["T"]


def test_schemas_are_relaxed_where_kubectl_120_would_reject_them(document_class: type) -> None:
    schema = {
        "type": "object",
        "required": ["a", "maybe"],
        "properties": {
            "a": {"type": "string"},
            "maybe": {"type": "object", "nullable": True, "properties": {"x": {"type": "string"}}},
            "loose": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"x": {"type": "string"}},
            },
            "looseList": {"type": "array", "x-kubernetes-preserve-unknown-fields": True, "items": {}},
            "noItems": {"type": "array"},
            "tuple": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
            "single": {"type": "array", "items": [{"type": "string"}]},
            "nullableType": {"type": ["string", "null"]},
            "twoTypes": {"type": ["string", "integer"]},
            "unknownType": {"type": "null"},
            "dangling": {"$ref": "#/definitions/Missing", "description": "gone"},
            "known": {"$ref": "#/definitions/U"},
            "intOrString": {
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            },
            "closed": {"type": "object", "additionalProperties": False},
            "empty": {"type": "object", "properties": {}},
        },
    }
    out = _schema_of(document_class, schema, others={"U": {"type": "string"}})
    props = out["properties"]
    assert out["required"] == ["a"]  # a nullable field is never missing
    assert props["maybe"] == {}
    assert props["loose"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert props["looseList"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert props["noItems"] == {} and props["tuple"] == {}
    assert props["single"] == {"type": "array", "items": {"type": "string"}}
    assert props["nullableType"] == {"type": "string"}
    assert props["twoTypes"] == {} and props["unknownType"] == {}
    assert props["dangling"] == {"description": "gone"} and props["known"] == {"$ref": "#/definitions/U"}
    assert props["intOrString"] == {"x-kubernetes-int-or-string": True}
    assert props["closed"] == {"type": "object", "additionalProperties": False}
    assert props["empty"] == {"type": "object", "properties": {}}  # present, if empty


def test_schema_scalars(document_class: type) -> None:
    schema = {
        "type": "integer",
        "format": "int64",
        "title": "T",
        "description": "d",
        "default": 3,
        "multipleOf": 0.5,
        "maximum": 1e300,
        "exclusiveMaximum": True,
        "minimum": -5,
        "exclusiveMinimum": False,  # a default: left out
        "maxLength": 0,  # likewise
        "minLength": 2,
        "pattern": "^a+$",
        "maxItems": 9,
        "minItems": -1,  # int64: ten bytes on the wire
        "uniqueItems": True,
        "maxProperties": 1 << 40,
        "minProperties": 1,
        "enum": [
            "é",
            'qu"ote',
            "back\\slash",
            "new\nline",
            "\x01",
            "😀",
            1,
            2.5,
            None,
            True,
            [1],
            {"k": "v"},
        ],
        "readOnly": True,
        "discriminator": "kind",
        "example": {"a": [1, "b"]},
        "externalDocs": {"url": "https://example.com/doc"},
        "x-kubernetes-map-type": "atomic",
    }
    expected = {k: v for k, v in schema.items() if k not in ("exclusiveMinimum", "maxLength")}
    assert _schema_of(document_class, schema) == expected


def test_parameters_responses_and_the_rest(document_class: type) -> None:
    doc = {
        "swagger": "2.0",
        "info": {"title": "t", "version": "1", "description": "d", "x-info": 1},
        "host": "example.com",
        "basePath": "/base",
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "paths": {
            "x-paths": "ext",
            "/things/{id}": {
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "type": "string"},
                    {"$ref": "#/parameters/shared"},
                ],
                "get": {
                    "operationId": "getThing",
                    "summary": "s",
                    "deprecated": True,
                    "tags": ["things"],
                    "parameters": [
                        {"name": "h", "in": "header", "type": "integer", "format": "int32", "minimum": 1},
                        {
                            "name": "q",
                            "in": "query",
                            "type": "array",
                            "items": {"type": "string", "enum": ["a", "b"]},
                            "collectionFormat": "multi",
                            "allowEmptyValue": True,
                            "x-q": [1],
                        },
                        {"name": "f", "in": "formData", "type": "string", "default": "x", "maxLength": 3},
                    ],
                    "responses": {
                        "200": {"description": "OK", "schema": {"type": "string"}, "x-r": True},
                        "404": {"$ref": "#/responses/missing"},
                        "x-responses": "ext",
                    },
                    "security": [{"key": ["read", "write"]}],
                },
                "post": {
                    "parameters": [
                        {
                            "name": "body",
                            "in": "body",
                            "required": True,
                            "description": "b",
                            "schema": {"type": "object"},
                        }
                    ],
                    "responses": {
                        "201": {"description": "file", "schema": {"type": "file", "description": "f"}}
                    },
                },
                "head": {"responses": {}},
                "options": {"responses": {}},
            },
        },
        "definitions": {},
        "security": [{"key": []}],
        "securityDefinitions": {
            "key": {"type": "apiKey", "name": "X-Key", "in": "header"},
            "basic": {"type": "basic", "description": "b"},
        },
        "tags": [{"name": "things", "description": "d", "externalDocs": {"url": "u"}}],
        "externalDocs": {"description": "docs", "url": "https://example.com"},
        "x-document": {"a": 1},
    }
    decoded = decode(document_class, openapi_v2_proto.encode(doc))
    assert to_json(decoded) == doc
    item = {e.name: e.value for e in decoded.paths.path}["/things/{id}"]
    assert item.parameters[1].json_reference._ref == "#/parameters/shared"
    header = item.get.parameters[0].parameter.non_body_parameter.header_parameter_sub_schema
    assert (header.name, header.type, header.minimum) == ("h", "integer", 1.0)


def test_yaml_text_reads_back() -> None:
    values = [
        None,
        True,
        False,
        0,
        -7,
        1 << 70,
        1.5,
        1e-05,
        -2.5e300,
        "",
        "plain",
        "yes",  # a string, not YAML 1.1's boolean
        "123",
        'a "quoted" \\ string',
        "tab\tnew\nline\rcr",
        "\x00\x07\x1b\x7f\x85\xa0\u2028\ufeff\U0001f600",
        "ünïcödé ✓",
        ["a", 1, [None]],
        {"group": "", "kind": "Pod", "version": "v1"},
        [{"group": "apps", "kind": "Deployment", "version": "v1"}],
    ]
    for value in values:
        text = openapi_v2_proto.yaml_text(value)
        assert yaml.safe_load(text) == value, text
    assert math.isnan(yaml.safe_load(openapi_v2_proto.yaml_text(math.nan)))
    assert yaml.safe_load(openapi_v2_proto.yaml_text(-math.inf)) == -math.inf


def test_empty_document() -> None:
    assert openapi_v2_proto.encode({}) == b""
    assert openapi_v2_proto.encode({"swagger": "2.0"}) == b"\x0a\x032.0"
