"""Module arguments: validation rules, documentation agreeing with argument_spec, and the
conversion of the policy module's `maps` option into what loader.apply takes."""

import importlib

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ebpf.oom.plugins.module_utils import common, converge, probe
from ansible_collections.ebpf.oom.plugins.modules import compile as compile_mod
from ansible_collections.ebpf.oom.plugins.modules import (events_info, explain, host, kernel_info, observer, policy,
                                                          verify)

WITH_SPEC = {"compile": compile_mod, "events_info": events_info, "explain": explain, "host": host, "observer": observer,
             "policy": policy, "verify": verify}


def documented_options(mod):
    """The module's options as ansible-doc shows them: its own and its ebpf.oom fragments'."""
    doc = yaml.safe_load(mod.DOCUMENTATION)
    options = dict(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment", []):
        parts = fragment.split(".")
        if parts[:2] != ["ebpf", "oom"]:
            continue
        module = importlib.import_module("ansible_collections.ebpf.oom.plugins.doc_fragments." + parts[2])
        text = getattr(module.ModuleDocFragment, parts[3].upper() if len(parts) > 3 else "DOCUMENTATION")
        options.update(yaml.safe_load(text).get("options") or {})
    return options


def validate(mod, params):
    v = ArgumentSpecValidator(mod.ARGUMENT_SPEC, **mod.SPEC_KWARGS)
    return v.validate(params)


@pytest.mark.parametrize("name,mod", sorted(WITH_SPEC.items()))
def test_documented_options_match_argument_spec(name, mod):
    """Every option but the internal ones (a leading '_', set by the action plugin) is
    documented as the argument_spec has it; the internal ones are not documented."""
    options = documented_options(mod)
    public = dict((o, spec) for o, spec in mod.ARGUMENT_SPEC.items() if not o.startswith("_"))
    assert sorted(options) == sorted(public), name
    for opt, spec in public.items():
        assert options[opt].get("type") == spec.get("type"), opt
        assert options[opt].get("default") == spec.get("default"), opt
        assert options[opt].get("choices") == spec.get("choices"), opt
        assert bool(options[opt].get("required")) == bool(spec.get("required")), opt


@pytest.mark.parametrize("mod", [compile_mod, events_info, host, kernel_info, observer, policy, verify])
def test_every_module_documents_examples_and_return_values(mod):
    assert yaml.safe_load(mod.EXAMPLES)
    assert yaml.safe_load(mod.RETURN)
    assert yaml.safe_load(mod.DOCUMENTATION)["module"] == mod.__name__.rsplit(".", 1)[1]


def test_compile_needs_exactly_one_of_src_and_content():
    assert validate(compile_mod, {"src": "a.bpf.c"}).error_messages == []
    both = validate(compile_mod, {"src": "a.bpf.c", "content": "int x;"}).error_messages
    assert any("mutually exclusive" in m for m in both)
    neither = validate(compile_mod, {"dest": "a.o"}).error_messages
    assert any("one of the following is required: src, content" in m for m in neither)


def test_observer_present_needs_builds_or_objects_but_not_both():
    errors = validate(observer, {}).error_messages
    assert any("state is present but any of the following are missing: objects, builds" in m for m in errors)
    both = validate(observer, {"objects": ["/a.o"], "builds": [{"variant": "tp_btf", "content": ""}]})
    assert any("mutually exclusive" in m for m in both.error_messages)
    assert validate(observer, {"state": "absent"}).error_messages == []
    assert validate(observer, {"objects": ["/a.o"]}).validated_parameters["persist"] is True


def test_compile_defaults():
    params = validate(compile_mod, {"content": "int x;"}).validated_parameters
    assert params["vmlinux"] == "auto"
    assert params["defines"] == {} and params["include_dirs"] == []


def test_policy_present_needs_an_object_or_a_document_absent_does_not():
    errors = validate(policy, {"name": "p"}).error_messages
    assert any("state is present but any of the following are missing: object, policy" in m
               for m in errors)
    assert validate(policy, {"name": "p", "state": "absent"}).error_messages == []


@pytest.mark.parametrize("option,value", [("state", "gone"), ("on_unsupported", "ignore"),
                                          ("require_hook", "never")])
def test_policy_rejects_unknown_choices(option, value):
    errors = validate(policy, {"name": "p", "object": "/x.o", option: value}).error_messages
    assert any(option in m and "must be one of" in m for m in errors)


def test_verify_object_and_sha256_are_exclusive():
    errors = validate(verify, {"object": "/x.o", "object_sha256": "ab"}).error_messages
    assert any("mutually exclusive" in m for m in errors)


@pytest.mark.parametrize("value,expected", [
    (7, 7),
    ("42", 42),
    (" -1 ", -1),
    (True, 1),
    ("0x0a000000", b"\x0a\x00\x00\x00"),
    ("0A 00 00 00", b"\x0a\x00\x00\x00"),
    ("de:ad:be:ef", b"\xde\xad\xbe\xef"),
])
def test_map_values_are_ints_or_raw_bytes(value, expected):
    assert converge.map_value(value, "where") == expected


@pytest.mark.parametrize("value", ["0x1", "zz", "1 2", "", None, 1.5, "0x", "0a0b"])
def test_map_values_that_are_neither_are_refused_with_the_place(value):
    with pytest.raises(ValueError, match="maps.m key"):
        converge.map_value(value, "maps.m key")


def test_map_entries_keep_order_and_name_the_bad_entry():
    assert converge.map_entries({"pids": {1: "0x01000000", "2": 3}}) == {
        "pids": [(1, b"\x01\x00\x00\x00"), (2, 3)]}
    with pytest.raises(ValueError, match=r"maps.pids\[1\]"):
        converge.map_entries({"pids": {1: "nope"}})
    with pytest.raises(ValueError, match="maps.pids must be a dict"):
        converge.map_entries({"pids": [1, 2]})


@pytest.mark.parametrize("text,mode", [("[none] integrity confidentiality\n", "none"),
                                       ("none integrity [confidentiality]\n", "confidentiality")])
def test_kernel_info_reads_the_selected_lockdown_mode(tmp_path, monkeypatch, text, mode):
    path = tmp_path / "lockdown"
    path.write_text(text)
    monkeypatch.setattr(probe, "LOCKDOWN", str(path))
    assert probe.lockdown_mode() == mode


def test_kernel_info_without_lockdown_or_jit_files_says_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "LOCKDOWN", str(tmp_path / "none"))
    monkeypatch.setattr(probe, "JIT_SYSCTL", str(tmp_path / "none"))
    assert probe.lockdown_mode() is None and probe.jit_enabled() is None


@pytest.mark.parametrize("data,efi,expected", [
    (b"\x06\x00\x00\x00\x01", True, True), (b"\x06\x00\x00\x00\x00", True, False),
    (None, True, False), (None, False, None)])
def test_kernel_info_reads_secure_boot_from_the_efi_variable(tmp_path, monkeypatch, data, efi, expected):
    var, efi_dir = tmp_path / "SecureBoot-guid", tmp_path / "efi"
    if data is not None:
        var.write_bytes(data)
    if efi:
        efi_dir.mkdir()
    monkeypatch.setattr(probe, "SECURE_BOOT_VAR", str(var))
    monkeypatch.setattr(probe, "EFI_DIR", str(efi_dir))
    assert probe.secure_boot() is expected


def test_unsupported_message_names_the_missing_hook_symbols():
    msg = probe.unsupported_message([common.HOOK_FUNC, common.NAME_KFUNC])
    assert common.HOOK_FUNC in msg and common.NAME_KFUNC in msg
    assert "not a kernel with the OOM policy hook" in msg
    assert "hook" not in probe.unsupported_message(["btf_trace_mark_victim"]).split("in its BTF")[1]
