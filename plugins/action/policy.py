# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ebpf.oom.policy: declarative documents are checked on the controller.

With `policy:` (a document, or the path of a YAML/JSON file on the
controller), the document is validated against schemas/policy.schema.json
and linted BEFORE any host is contacted; a bad document fails the task with
one line per problem, `path: reason` (`rules[2].action: 'abort' is only
allowed with scope memcg`). Lint findings are warnings, or failures with
`strict: true`.

Then the collection's generic program (bpf/generic.bpf.c) is compiled here,
once (content-addressed cache), copied to the host, and the module runs with
`object:` pointing at it and the document inline; the module renders the
document on the host (cgroup paths become that host's cgroup ids) and loads
or updates the policy. Without `policy:` the module runs unchanged.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.ebpf.oom.plugins.module_utils import common, compiler, renderer

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_PATH = os.path.join(COLLECTION_ROOT, "schemas", "policy.schema.json")
BPF_DIR = os.path.join(COLLECTION_ROOT, "bpf")
BUNDLED_VMLINUX = os.path.join(BPF_DIR, "include", "vmlinux.h")
MODULE = "ebpf.oom.policy"
_schema = []


class PolicyError(Exception):
    """An unusable document; `errors` lists 'path: reason' lines."""

    def __init__(self, errors):
        super(PolicyError, self).__init__("\n".join(errors))
        self.errors = errors


def schema():
    if not _schema:
        with open(SCHEMA_PATH) as f:
            _schema.append(json.load(f))
    return _schema[0]


def _validator():
    try:
        import jsonschema
    except ImportError:
        raise AnsibleError("%s: validating a policy document needs the Python package jsonschema "
                           "on the controller (pip install jsonschema)" % MODULE)
    return jsonschema.Draft202012Validator(schema())


def field_path(parts):
    """['rules', 2, 'action'] -> 'rules[2].action'."""
    out = ""
    for part in parts:
        out += "[%d]" % part if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(document)"


def _type_name(value):
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
        return path, "must be %s, not %s" % (_type_name(wanted), _type_name(error.instance))
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
        return ["(document): must be a mapping, not %s" % _type_name(document)]
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


def controller_cache():
    """The compiler cache on the controller: CACHE_DIR when writable, else ~/.cache/ebpf-oom."""
    if os.access(common.CACHE_DIR, os.W_OK):
        return common.CACHE_DIR
    return os.path.join(os.path.expanduser("~"), ".cache", "ebpf-oom")


def compile_generic(cache_dir=None):
    """The generic program's object on the controller (compiled once per source)."""
    try:
        built = compiler.compile_object(src=os.path.join(COLLECTION_ROOT, renderer.GENERIC_SOURCE),
                                        include_dirs=[BPF_DIR], vmlinux=BUNDLED_VMLINUX,
                                        cache_dir=cache_dir or controller_cache())
    except compiler.CompileError as e:
        raise AnsibleError("%s: compiling %s on the controller failed: %s\n%s"
                           % (MODULE, renderer.GENERIC_SOURCE, e, e.log_tail))
    return built["object"]


class ActionModule(ActionBase):

    # No early remote tmp: a bad document must fail before the host is contacted.
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def _document(self, policy):
        if isinstance(policy, dict):
            return plain(policy)
        if not isinstance(policy, str):
            raise PolicyError(["policy: must be a document (a mapping) or the path of a YAML or "
                               "JSON file on the controller, not %s" % _type_name(policy)])
        path = self._find_needle("files", policy)
        return plain(self._loader.load_from_file(path))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        try:
            if args.get("policy") is None or args.get("state", "present") == "absent":
                result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
            else:
                result.update(self._declarative(args, task_vars))
        except AnsibleError as e:
            result.update(failed=True, msg=to_text(e))
        finally:
            if self._connection._shell.tmpdir:
                self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _declarative(self, args, task_vars):
        """Validate and lint the document here, then run the module with the generic object."""
        try:
            document = self._document(args["policy"])
            errors = validate(document)
        except PolicyError as e:
            errors = e.errors
        if errors:
            return dict(failed=True, errors=errors, msg="policy document is invalid:\n" + "\n".join(errors))
        findings = renderer.lint(document)
        if findings and args.get("strict"):
            return dict(failed=True, lint=findings,
                        msg="policy %s fails lint (strict: true):\n%s" % (document["name"], "\n".join(findings)))
        args["policy"] = document
        if not args.get("name"):
            if "." in document["name"]:
                return dict(failed=True, msg="policy name %r has a '.', which bpffs refuses in directory "
                            "names; give name: explicitly" % document["name"])
            args["name"] = document["name"]
        if not args.get("object"):
            local = compile_generic()
            remote = self._connection._shell.join_path(self._make_tmp_path(), "generic.bpf.o")
            self._transfer_file(local, remote)
            self._fixup_perms2((self._connection._shell.tmpdir, remote))
            args["object"] = remote
        result = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        result["lint"] = findings
        if findings:
            result["warnings"] = findings + list(result.get("warnings") or [])
        return result
