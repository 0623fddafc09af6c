"""CEL validation rules of custom resources (``x-kubernetes-validations``), as kube-apiserver runs them.

The expression language itself is the ``common-expression-language`` package (cel-rust): it
parses, runs the standard macros and functions, and reports which names an expression
references. Around it, one module per job:

- ``engine``: loading the engine, compiling source text once, running a program, and the two
  errors (``CompileError``, ``EvalError``) in cel-go's words;
- ``library``: Kubernetes' extension libraries (lists, strings, regex, quantity, url, ip, cidr,
  semver, format), registered as functions;
- ``values``: the object as a rule sees it (``to_cel``) and the schema facts behind it;
- ``checks``: the CRD-time stand-in for cel-go's type checker; ``rules``: one compiled rule;
- ``tree``: the rules of a schema as a tree, and the walk that runs them and words the causes;
- ``fieldpath``: a rule's ``fieldPath``.

The names other modules use are re-exported here.
"""

from __future__ import annotations

from services.apiserver.cel.engine import CompileError, EvalError, run
from services.apiserver.cel.fieldpath import parse_field_path
from services.apiserver.cel.library import FUNCTIONS
from services.apiserver.cel.rules import REASONS, Rule, compile_rule
from services.apiserver.cel.tree import MAX_MESSAGE_BYTES, Node, Outcome, build, validate, validator_for
from services.apiserver.cel.values import escape, to_cel

__all__ = [
    "FUNCTIONS",
    "MAX_MESSAGE_BYTES",
    "REASONS",
    "CompileError",
    "EvalError",
    "Node",
    "Outcome",
    "Rule",
    "build",
    "compile_rule",
    "escape",
    "parse_field_path",
    "run",
    "to_cel",
    "validate",
    "validator_for",
]
