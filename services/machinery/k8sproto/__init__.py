"""Field tables for Kubernetes' protobuf wire format, one module per API group version.

Each table module (``core_v1``, ``meta_v1``, ``apps_v1``, ...) states, for every message of
its proto package, the field numbers, JSON names and types that upstream's ``generated.proto``
files define; ``schema`` merges them and maps an ``apiVersion``/``kind`` to a message name.
The decoder that walks these tables is ``services.machinery.protobuf``.
"""
