# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Declarative policy documents on the controller: validation against
schemas/policy.schema.json, with one 'path: reason' line per problem.

Controller side (plugin_utils): used by the ebpf.oom.policy action plugin and the
tests; imports the engine's renderer for what the schema cannot express.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible_collections.ebpf.oom.plugins.module_utils import renderer
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import SCHEMA_PATH

_schema = []


def schema():
    """The policy schema (read once)."""
    if not _schema:
        with open(SCHEMA_PATH) as f:
            _schema.append(json.load(f))
    return _schema[0]


def _validator():
    try:
        import jsonschema
    except ImportError:
        raise AnsibleError("ebpf.oom.policy: validating a policy document needs the Python package "
                           "jsonschema on the controller (pip install jsonschema)")
    return jsonschema.Draft202012Validator(schema())


def field_path(parts):
    """['rules', 2, 'action'] -> 'rules[2].action'."""
    out = ""
    for part in parts:
        out += "[%d]" % part if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(document)"


def type_name(value):
    """How a document's value is named in a message: 'a mapping', 'a list', ..."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _reason(error):
    """(path parts, reason) for one jsonschema error, in the document's words."""
    path = list(error.absolute_path)
    custom = (error.schema.get("x-errors") or {}).get(error.validator) if isinstance(error.schema, dict) else None
    kind = error.validator
    if kind == "oneOf":
        return _one_of(error)
    if custom:
        return path, custom
    if kind == "required":
        missing = [p for p in error.validator_value if p not in error.instance]
        return path + missing[:1], "is required"
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return path + extra[:1], "unknown field (allowed: %s)" % ", ".join(allowed)
    if kind == "enum":
        value = repr(error.instance) if isinstance(error.instance, str) else json.dumps(error.instance)
        return path, "%s is not one of %s" % (value, ", ".join(str(v) for v in error.validator_value))
    if kind == "type":
        wanted = {"integer": 0, "string": "", "object": {}, "array": []}.get(error.validator_value)
        return path, "must be %s, not %s" % (type_name(wanted), type_name(error.instance))
    if kind == "minimum":
        return path, "%s is below the minimum %s" % (error.instance, error.validator_value)
    if kind == "maximum":
        return path, "%s is above the maximum %s" % (error.instance, error.validator_value)
    if kind == "maxItems":
        return path, "has %d entries; at most %d" % (len(error.instance), error.validator_value)
    if kind == "maxLength":
        return path, "is longer than %d characters" % error.validator_value
    return path, error.message


def _one_of(error):
    """The fallback's string-or-mapping choice: report the branch of the value's type."""
    branch = 1 if isinstance(error.instance, dict) else 0
    inner = [e for e in error.context if e.relative_schema_path[0] == branch]
    if not inner:
        return list(error.absolute_path), error.message
    best = sorted(inner, key=lambda e: (-len(e.absolute_path), str(e.message)))[0]
    return _reason(best)


def validate(document):
    """Problems of a document, as sorted 'path: reason' lines; [] when it is valid."""
    if not isinstance(document, dict):
        return ["(document): must be a mapping, not %s" % type_name(document)]
    lines = set()
    for error in _validator().iter_errors(document):
        path, reason = _reason(error)
        lines.add((tuple(str(p) for p in path), "%s: %s" % (field_path(path), reason)))
    errors = [line for unused, line in sorted(lines)]
    if not errors:
        errors = renderer.check(document)
    return errors


def plain(value):
    """Ansible's (possibly tagged) values as plain JSON types."""
    if isinstance(value, dict):
        return dict((to_text(k), plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return to_text(value)
