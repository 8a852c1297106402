# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a declarative policy is enforced: one class per way, behind one small interface.

Layer 5 (above the loader): imports the loader, cgrouprules, the renderer and the leaf
helpers.

A backend knows which programs of the generic object (bpf/generic.bpf.c) it loads and
attaches, applies a rendered document with them, and says what verify checks beyond
the pins. `evaluate_task` judges every OOM candidate in the kernel's victim selection
(the hook bpf_oom_evaluate_task): the exact choice the document describes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from . import cgrouprules, loader, renderer


class Backend(object):
    """The interface; see EvaluateTask for the one the hook kernel offers."""

    name = None
    programs = ()      # the generic object's programs this backend loads and attaches

    def apply(self, name, object_path, document, check_mode=False, persist=True):
        """Load or update the policy; loader.apply's result plus `cgroups`
        ({path: [id of the live cgroup its rules match]})."""
        rendered = renderer.render(document)
        followed = {}

        def after_attach(map_fd):
            followed.update(cgrouprules.sync(map_fd(renderer.LIVE_MAP), rendered.cgroup_rules))

        result = loader.apply(name, object_path, globals=rendered.globals, maps=rendered.maps,
                              check_mode=check_mode, persist=persist, document=document,
                              programs=list(self.programs), after_attach=after_attach,
                              backend=self.name)
        if check_mode:  # nothing was written: what the rules would match now
            followed = cgrouprules.look(rendered.cgroup_rules)
        result["cgroups"] = dict((path, [ident] if ident else [])
                                 for path, ident in sorted(followed.items()))
        return result


class EvaluateTask(Backend):
    """The kernel's victim selection asks the policy about each candidate."""

    name = "evaluate_task"
    programs = (renderer.NAME_PROGRAM, renderer.EVAL_PROGRAM) + renderer.CGROUP_PROGRAMS


BACKENDS = dict((b.name, b) for b in (EvaluateTask(),))


def for_record(record):
    """The backend a recorded declarative policy was applied with (evaluate_task for
    records written before there was a choice)."""
    return BACKENDS[record.get("backend") or EvaluateTask.name]
