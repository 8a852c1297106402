# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Declarative policy documents on the controller: checked with the engine's one check
(module_utils/language.py: the schema's keywords, then what a schema cannot say), one
'path: reason' line per problem, exactly as the host would refuse them.

Controller side (plugin_utils): used by the ebpf.oom.policy action plugin and the tests.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.common.text.converters import to_text
from ansible_collections.ebpf.oom.plugins.module_utils import language

field_path = language.field_path
type_name = language.kind


def validate(document):
    """Problems of a document, as sorted 'path: reason' lines; [] when it is valid."""
    return language.check(document)


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
