# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot restore: apply every policy kept in the state dir again.

Layer 5 (above the loader): imports the loader, state, maps, the renderer and the
leaf helpers.  Run by `ebpf-oom restore` (cli.py) from ebpf-oom-restore.service.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from . import loader, renderer, state
from .errors import LoaderError, RenderError
from .maps import record_entries
from .names import check_name


def restore_all():
    """Re-apply every policy kept in STATE_DIR -> (ok_names, {name: reason}); an
    object.o whose sha256 is not the record's is refused."""
    ok, failed = [], {}
    for name in state.saved_names():
        try:
            check_name(name, LoaderError)
            obj_path, record = state.load(name)
            document = record.get("document")
            if document is None:
                globals_, maps = record.get("globals"), record_entries(record.get("maps", {}))
            else:
                # Cgroup ids are inode numbers: render the document on this boot's cgroups.
                rendered = renderer.render(document)
                globals_, maps = rendered.globals, rendered.maps
            loader.apply(name, obj_path, globals=globals_, maps=maps, persist=True,
                         document=document)
            ok.append(name)
        except (LoaderError, RenderError, ValueError, OSError) as exc:
            failed[name] = str(exc)
    return ok, failed
