# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one rule for policy names.

Layer 0 (leaf helpers): imports nothing from the engine.

A policy's name is its bpffs directory (bpffs refuses a '.') and the name the
kernel prints as `policy_name=` (the hook keeps POLICY_NAME_MAX bytes): 1 to 15
bytes of [A-Za-z0-9_-].  The schema's `name` pattern
(schemas/policy.schema.json) and the bpf_oom role's check say the same;
tests/unit/test_names.py holds them to it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# The kernel's policy-name buffer (include/linux/oom.h in the hook patch).
POLICY_NAME_MAX = 15  # bytes, without the terminating NUL
NAME_CHARS = "[A-Za-z0-9_-]"
_NAME_RE = re.compile(NAME_CHARS + "+")


def name_problem(name):
    """Why ``name`` is not a valid policy name, or None when it is one."""
    if not isinstance(name, str) or not name:
        return "policy name must be a non-empty string"
    size = len(name.encode("utf-8"))
    if size > POLICY_NAME_MAX:
        return ("policy name %r is %d bytes long; the kernel keeps at most %d"
                % (name, size, POLICY_NAME_MAX))
    if not _NAME_RE.fullmatch(name):  # fullmatch: "abc\n" is not a name
        return "policy name %r may only hold letters, digits, '_' and '-'" % name
    return None


def check_name(name, error=ValueError):
    """``name`` if it is a valid policy name, else ``error`` (an exception class) saying why."""
    problem = name_problem(name)
    if problem:
        raise error(problem)
    return name
