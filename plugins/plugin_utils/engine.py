# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine as one archive for a host: plugins/module_utils/*.py as the package
ebpf_oom_engine in a zip file, which the host command (roles/bpf_oom/files/ebpf-oom)
imports with Python's zipimport.

The archive is built the same from the same sources on any controller (sorted entries,
fixed timestamps and modes), so that the module can compare it with what a host has by
sha256 and a rerun changes nothing.

Controller side (plugin_utils): used by plugins/action/engine.py and the tests.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import os
import zipfile

MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
PACKAGE = "ebpf_oom_engine"
INIT = b"# ebpf.oom engine (plugins/module_utils), installed by ebpf.oom.bpf_oom\n"
STAMP = (1980, 1, 1, 0, 0, 0)


def sources(directory=MODULE_UTILS):
    """{name: bytes} of the engine's files (without the collection's __init__.py)."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py") and name != "__init__.py":
            with open(os.path.join(directory, name), "rb") as f:
                out[name] = f.read()
    return out


def archive(directory=MODULE_UTILS):
    """The zip file's bytes: ebpf_oom_engine/__init__.py and every engine file."""
    files = dict(sources(directory), **{"__init__.py": INIT})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo("%s/%s" % (PACKAGE, name), date_time=STAMP)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()
