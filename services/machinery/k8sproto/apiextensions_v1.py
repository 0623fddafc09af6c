# fmt: off
"""Protobuf field tables for apiextensions.k8s.io/v1
(package k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_RAW = "k8s.io.apimachinery.pkg.runtime.RawExtension"
_SCHEMA = _P + "JSONSchemaProps"

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "ConversionRequest": (
        F(1, "uid", "string"),
        F(2, "desiredAPIVersion", "string"),
        F(3, "objects", _RAW, repeated=True),
    ),
    _P + "ConversionResponse": (
        F(1, "uid", "string"),
        F(2, "convertedObjects", _RAW, repeated=True),
        F(3, "result", _META + "Status"),
    ),
    _P + "ConversionReview": (
        F(1, "request", _P + "ConversionRequest"),
        F(2, "response", _P + "ConversionResponse"),
    ),
    _P + "CustomResourceColumnDefinition": (
        F(1, "name", "string"),
        F(2, "type", "string"),
        F(3, "format", "string"),
        F(4, "description", "string"),
        F(5, "priority", "int32"),
        F(6, "jsonPath", "string"),
    ),
    _P + "CustomResourceConversion": (
        F(1, "strategy", "string"),
        F(2, "webhook", _P + "WebhookConversion"),
    ),
    _P + "CustomResourceDefinition": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "CustomResourceDefinitionSpec"),
        F(3, "status", _P + "CustomResourceDefinitionStatus"),
    ),
    _P + "CustomResourceDefinitionCondition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(3, "lastTransitionTime", _META + "Time"),
        F(4, "reason", "string"),
        F(5, "message", "string"),
        F(6, "observedGeneration", "int64"),
    ),
    _P + "CustomResourceDefinitionList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "CustomResourceDefinition", repeated=True),
    ),
    _P + "CustomResourceDefinitionNames": (
        F(1, "plural", "string"),
        F(2, "singular", "string"),
        F(3, "shortNames", "string", repeated=True),
        F(4, "kind", "string"),
        F(5, "listKind", "string"),
        F(6, "categories", "string", repeated=True),
    ),
    _P + "CustomResourceDefinitionSpec": (
        F(1, "group", "string"),
        F(3, "names", _P + "CustomResourceDefinitionNames"),
        F(4, "scope", "string"),
        F(7, "versions", _P + "CustomResourceDefinitionVersion", repeated=True),
        F(9, "conversion", _P + "CustomResourceConversion"),
        F(10, "preserveUnknownFields", "bool"),
    ),
    _P + "CustomResourceDefinitionStatus": (
        F(1, "conditions", _P + "CustomResourceDefinitionCondition", repeated=True),
        F(2, "acceptedNames", _P + "CustomResourceDefinitionNames"),
        F(3, "storedVersions", "string", repeated=True),
        F(4, "observedGeneration", "int64"),
    ),
    _P + "CustomResourceDefinitionVersion": (
        F(1, "name", "string"),
        F(2, "served", "bool"),
        F(3, "storage", "bool"),
        F(7, "deprecated", "bool"),
        F(8, "deprecationWarning", "string"),
        F(4, "schema", _P + "CustomResourceValidation"),
        F(5, "subresources", _P + "CustomResourceSubresources"),
        F(6, "additionalPrinterColumns", _P + "CustomResourceColumnDefinition", repeated=True),
        F(9, "selectableFields", _P + "SelectableField", repeated=True),
    ),
    _P + "CustomResourceSubresourceScale": (
        F(1, "specReplicasPath", "string"),
        F(2, "statusReplicasPath", "string"),
        F(3, "labelSelectorPath", "string"),
    ),
    # no fields: present means "serve /status", marshals as {}
    _P + "CustomResourceSubresourceStatus": (),
    _P + "CustomResourceSubresources": (
        F(1, "status", _P + "CustomResourceSubresourceStatus"),
        F(2, "scale", _P + "CustomResourceSubresourceScale"),
    ),
    _P + "CustomResourceValidation": (
        F(1, "openAPIV3Schema", _SCHEMA),
    ),
    _P + "ExternalDocumentation": (
        F(1, "description", "string"),
        F(2, "url", "string"),
    ),
    _P + "JSON": (
        F(1, "raw", "bytes"),
    ),
    _SCHEMA: (
        F(1, "id", "string"),
        # proto names "schema" and "ref"; JSON names carry the "$"
        F(2, "$schema", "string"),
        F(3, "$ref", "string"),
        F(4, "description", "string"),
        F(5, "type", "string"),
        F(6, "format", "string"),
        F(7, "title", "string"),
        F(8, "default", _P + "JSON"),
        F(9, "maximum", "double"),
        F(10, "exclusiveMaximum", "bool"),
        F(11, "minimum", "double"),
        F(12, "exclusiveMinimum", "bool"),
        F(13, "maxLength", "int64"),
        F(14, "minLength", "int64"),
        F(15, "pattern", "string"),
        F(16, "maxItems", "int64"),
        F(17, "minItems", "int64"),
        F(18, "uniqueItems", "bool"),
        F(19, "multipleOf", "double"),
        F(20, "enum", _P + "JSON", repeated=True),
        F(21, "maxProperties", "int64"),
        F(22, "minProperties", "int64"),
        F(23, "required", "string", repeated=True),
        F(24, "items", _P + "JSONSchemaPropsOrArray"),
        F(25, "allOf", _SCHEMA, repeated=True),
        F(26, "oneOf", _SCHEMA, repeated=True),
        F(27, "anyOf", _SCHEMA, repeated=True),
        F(28, "not", _SCHEMA),
        F(29, "properties", "map<string," + _SCHEMA + ">"),
        F(30, "additionalProperties", _P + "JSONSchemaPropsOrBool"),
        F(31, "patternProperties", "map<string," + _SCHEMA + ">"),
        F(32, "dependencies", "map<string," + _P + "JSONSchemaPropsOrStringArray>"),
        F(33, "additionalItems", _P + "JSONSchemaPropsOrBool"),
        F(34, "definitions", "map<string," + _SCHEMA + ">"),
        F(35, "externalDocs", _P + "ExternalDocumentation"),
        F(36, "example", _P + "JSON"),
        F(37, "nullable", "bool"),
        # proto names are camelCase (xKubernetes...); JSON names are dashed
        F(38, "x-kubernetes-preserve-unknown-fields", "bool"),
        F(39, "x-kubernetes-embedded-resource", "bool"),
        F(40, "x-kubernetes-int-or-string", "bool"),
        F(41, "x-kubernetes-list-map-keys", "string", repeated=True),
        F(42, "x-kubernetes-list-type", "string"),
        F(43, "x-kubernetes-map-type", "string"),
        F(44, "x-kubernetes-validations", _P + "ValidationRule", repeated=True),
    ),
    _P + "JSONSchemaPropsOrArray": (
        F(1, "schema", _SCHEMA),
        # proto name "jSONSchemas"
        F(2, "jsonSchemas", _SCHEMA, repeated=True),
    ),
    _P + "JSONSchemaPropsOrBool": (
        F(1, "allows", "bool"),
        F(2, "schema", _SCHEMA),
    ),
    _P + "JSONSchemaPropsOrStringArray": (
        F(1, "schema", _SCHEMA),
        F(2, "property", "string", repeated=True),
    ),
    _P + "SelectableField": (
        F(1, "jsonPath", "string"),
    ),
    _P + "ServiceReference": (
        F(1, "namespace", "string"),
        F(2, "name", "string"),
        F(3, "path", "string"),
        F(4, "port", "int32"),
    ),
    _P + "ValidationRule": (
        F(1, "rule", "string"),
        F(2, "message", "string"),
        F(3, "messageExpression", "string"),
        F(4, "reason", "string"),
        F(5, "fieldPath", "string"),
        F(6, "optionalOldSelf", "bool"),
    ),
    _P + "WebhookClientConfig": (
        F(3, "url", "string"),
        F(1, "service", _P + "ServiceReference"),
        F(2, "caBundle", "bytes"),
    ),
    _P + "WebhookConversion": (
        F(2, "clientConfig", _P + "WebhookClientConfig"),
        F(3, "conversionReviewVersions", "string", repeated=True),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "CustomResourceDefinitionVersion", 8),
    (_P + "CustomResourceSubresourceScale", 3),
    (_P + "JSONSchemaProps", 3),
    (_P + "JSONSchemaProps", 9),
    (_P + "JSONSchemaProps", 11),
    (_P + "JSONSchemaProps", 13),
    (_P + "JSONSchemaProps", 14),
    (_P + "JSONSchemaProps", 16),
    (_P + "JSONSchemaProps", 17),
    (_P + "JSONSchemaProps", 19),
    (_P + "JSONSchemaProps", 21),
    (_P + "JSONSchemaProps", 22),
    (_P + "JSONSchemaProps", 38),
    (_P + "JSONSchemaProps", 42),
    (_P + "JSONSchemaProps", 43),
    (_P + "ServiceReference", 3),
    (_P + "ServiceReference", 4),
    (_P + "ValidationRule", 4),
    (_P + "ValidationRule", 6),
    (_P + "WebhookClientConfig", 3),
})

# Wrapper messages whose JSON form is not the object of their fields (Go has a
# custom MarshalJSON for each). The decoder must turn the decoded field dict
# into the JSON value described here.
CUSTOM_JSON: dict[str, str] = {
    _P + "JSON": (
        "field 1 'raw' holds JSON text (UTF-8 bytes); the JSON value is that text parsed "
        "(any JSON value: object, array, string, number, bool, null). Empty or absent raw -> null."
    ),
    _P + "JSONSchemaPropsOrArray": (
        "if 'jsonSchemas' (field 2) is non-empty -> a JSON array of those schemas; "
        "otherwise -> the 'schema' (field 1) object, or null when unset."
    ),
    _P + "JSONSchemaPropsOrBool": (
        "if 'schema' (field 2) is set -> that schema object; otherwise -> the bool "
        "'allows' (field 1), false when absent."
    ),
    _P + "JSONSchemaPropsOrStringArray": (
        "if 'property' (field 2) is non-empty -> a JSON array of those strings; "
        "otherwise -> the 'schema' (field 1) object, or null when unset."
    ),
}
