# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every error the engine raises, in one place, so that a caller knows what it can catch.

Layer 0 (leaf helpers): imports nothing from the engine.

Each error has a ``message`` and a ``log_tail`` (the kernel's, libbpf's or a
tool's last lines of output, empty when there are none); ``str()`` gives both.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class EngineError(Exception):
    """Base of the engine's errors: ``message`` and ``log_tail``."""

    def __init__(self, message, log_tail=""):
        super(EngineError, self).__init__(message)
        self.message = message
        self.log_tail = log_tail

    def __str__(self):
        return "%s\n%s" % (self.message, self.log_tail) if self.log_tail else self.message


class BpfError(EngineError):
    """A libbpf or bpf() failure; ``errno`` is the error number (0 when there is none)."""

    def __init__(self, message, log_tail="", errno=0):
        super(BpfError, self).__init__(message, log_tail)
        self.errno = errno


class BpffsError(EngineError):
    """bpffs is not there and cannot be mounted, or a pin cannot be handled."""


class CompileError(EngineError):
    """A refused input or a failed compile; ``log_tail`` holds the tool's stderr tail."""


class RenderError(EngineError):
    """A policy document that cannot become map data (message: 'path: reason')."""


class LoaderError(EngineError):
    """A policy could not be applied, removed or read; ``log_tail`` has the kernel's say."""


class UnsupportedKernel(LoaderError):
    """The running kernel lacks BTF symbols the object needs (``missing``)."""

    def __init__(self, missing):
        self.missing = list(missing)
        super(UnsupportedKernel, self).__init__(
            "the running kernel lacks what the policy needs: %s (not in /sys/kernel/btf/vmlinux)"
            % ", ".join(self.missing))


class ExplainError(LoaderError):
    """What cannot be explained, and why (a C policy, a cgroup that does not exist, ...)."""


class PolicyError(EngineError):
    """An unusable policy document (on the controller); ``errors`` lists 'path: reason' lines."""

    def __init__(self, errors):
        super(PolicyError, self).__init__("\n".join(errors))
        self.errors = errors
