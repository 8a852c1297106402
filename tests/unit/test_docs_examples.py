"""Every YAML example of the documentation works as shown.

The fenced ```yaml blocks of README.md, docs/*.md, roles/*/README.md and schemas/README.md
are extracted and each is checked for what it is:

- a policy document (a mapping with `name` and `rules`), or a list of rules: against the
  schema and the renderer's checks (plugin_utils/documents.validate) and the lint
  (language.lint);
- a playbook (plays with `hosts`): every play has `become: true` (the modules need root on
  the hosts); its roles' variables against the roles' meta/argument_specs.yml (with the
  base role's for the host-class roles, which depend on it); its tasks as below; and
  `ansible-playbook --syntax-check` resolves every module and role;
- a list of tasks: the arguments of each ebpf.oom module against the module's
  ARGUMENT_SPEC, the variables of an included ebpf.oom role against its argument spec,
  and every module name resolves;
- role variables (group_vars): against the argument specs of the roles;
- Prometheus alerting rules (`groups`): each rule alerts on an expression, and every
  ebpf_oom_* metric it names is one that plugins/module_utils/metrics.py writes.

Documents, rules and policy documents found inside tasks and role variables are checked as
documents too. A block that is none of these fails: show other text as ```text. An HTML
comment right before a block says when an example shows a failure on purpose:
`<!-- example: lint-warns -->` (the lint must warn) or `<!-- example: invalid -->` (the
document must be refused).
"""

import glob
import importlib
import os
import re
import subprocess
import sys
import textwrap

import ansible.modules
import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.playbook.task import Task

from conftest import REPO
from support import argument_spec
from ansible_collections.ebpf.oom.plugins.module_utils import language
from ansible_collections.ebpf.oom.plugins.plugin_utils import documents

DOC_FILES = (["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
             + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "roles", "*", "README.md")))
             + ["schemas/README.md"])
# A fence may be indented (a block inside a list item); its lines are dedented.
FENCE = re.compile(r"^([ \t]*)```(?:yaml|yml)[ \t]*\n(.*?)^\1```[ \t]*$", re.M | re.S)
MARK = re.compile(r"<!--\s*example:\s*([a-z-]+)\s*-->\s*$")
MARKS = ("lint-warns", "invalid")
ROLES = sorted(os.listdir(os.path.join(REPO, "roles")))
TASK_KEYWORDS = set(Task.fattributes) | {"local_action", "block", "rescue", "always"}
PLAY_TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers")
METRICS_SOURCE = os.path.join(REPO, "plugins", "module_utils", "metrics.py")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


class Example:
    def __init__(self, path, line, text, mark):
        self.path, self.line, self.text, self.mark = path, line, text, mark

    def __repr__(self):
        return "%s:%d" % (self.path, self.line)


def examples():
    found = []
    for path in DOC_FILES:
        with open(os.path.join(REPO, path)) as f:
            text = f.read()
        for m in FENCE.finditer(text):
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mark = MARK.search(before)
            body = textwrap.dedent(m.group(2)) if m.group(1) else m.group(2)
            found.append(Example(path, text.count("\n", 0, m.start()) + 1, body,
                                 mark.group(1) if mark else None))
    return found


EXAMPLES = examples()


# ---------------------------------------------------------------- what is checked

def check_document(document, mark=None):
    """Problems of a policy document; with a mark, the problem it must show."""
    errors = documents.validate(document)
    findings = [] if errors else language.lint(document)
    if mark == "invalid":
        return [] if errors else ["the document is marked invalid but validates"]
    if mark == "lint-warns":
        return errors if errors or findings else ["the document is marked lint-warns but lints clean"]
    return ["document %s: %s" % (document.get("name"), e) for e in errors + findings]


def check_rules(rules, mark=None):
    return check_document({"name": "example", "rules": rules}, mark)


def templated(value):
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def placeholder(spec):
    """A value of the option's type, standing in for a Jinja expression."""
    return {"int": 0, "bool": False, "dict": {}, "list": [], "float": 0.0}.get(spec.get("type"), "x")


def concrete(params, spec):
    """params with Jinja expressions replaced by placeholders of the options' types."""
    out = {}
    for key, value in (params or {}).items():
        option = spec.get(key, {})
        if templated(value):
            out[key] = placeholder(option)
        elif isinstance(value, list) and option.get("options"):
            out[key] = [concrete(v, option["options"]) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def role_spec(name):
    """A role's options, with those of the roles it depends on."""
    base = os.path.join(REPO, "roles", name, "meta")
    with open(os.path.join(base, "argument_specs.yml")) as f:
        spec = dict(yaml.safe_load(f)["argument_specs"]["main"]["options"])
    with open(os.path.join(base, "main.yml")) as f:
        for dep in yaml.safe_load(f).get("dependencies") or []:
            spec.update(role_spec((dep["role"] if isinstance(dep, dict) else dep).split(".")[-1]))
    return spec


def embedded_documents(variables):
    """Problems of the documents and rules inside role variables (or a task's arguments)."""
    problems = []
    for key, value in (variables or {}).items():
        if templated(value):
            continue
        if key == "bpf_oom_policies":
            problems += [p for entry in value if isinstance(entry.get("policy"), dict)
                         for p in check_document(entry["policy"])]
        elif key.endswith("_rules") and isinstance(value, list):
            problems += check_rules(value)
        elif key.endswith("_policy") and isinstance(value, dict):
            problems += check_document(value)
    return problems


def check_role_vars(role, variables):
    """Problems of variables given to an ebpf.oom role (or to any of them, role=None)."""
    if role is not None and role not in ROLES:
        return ["no role ebpf.oom.%s" % role]
    spec = role_spec(role) if role else dict((k, v) for r in ROLES for k, v in role_spec(r).items())
    result = ArgumentSpecValidator(spec).validate(concrete(variables, spec))
    return ["role %s: %s" % (role or "variables", m) for m in result.error_messages] + embedded_documents(variables)


def check_role_entry(entry):
    if isinstance(entry, str):
        name, variables = entry, {}
    else:
        name = entry.get("role") or entry.get("name")
        variables = dict(entry.get("vars") or {})
        variables.update((k, v) for k, v in entry.items() if k not in ("role", "name", "vars", "when", "tags"))
    if not name.startswith("ebpf.oom."):
        return []
    return check_role_vars(name.split(".", 2)[2], variables)


def module_of(task):
    names = [k for k in task if k not in TASK_KEYWORDS]
    assert len(names) == 1, "a task names one module: %r" % task
    return names[0]


def module_exists(name):
    """ebpf.oom modules from this checkout, ansible.builtin ones from ansible-core."""
    if name.startswith("ebpf.oom."):
        return os.path.exists(os.path.join(REPO, "plugins", "modules", name.split(".", 2)[2] + ".py"))
    return name.startswith("ansible.builtin.") and os.path.exists(
        os.path.join(os.path.dirname(ansible.modules.__file__), name.split(".", 2)[2] + ".py"))


def ebpf_module(name):
    return importlib.import_module("ansible_collections.ebpf.oom.plugins.modules." + name)


def check_task(task):
    if "block" in task:
        return [p for sub in task["block"] + task.get("rescue", []) + task.get("always", [])
                for p in check_task(sub)]
    module = module_of(task)
    args = task[module]
    if not module_exists(module):
        return ["no module %s" % module]
    if module in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
        return check_role_entry(dict(args, vars=task.get("vars") or {}))
    if not module.startswith("ebpf.oom."):
        return []
    short = module.split(".", 2)[2]
    mod = ebpf_module(short)
    spec = getattr(mod, "ARGUMENT_SPEC", None) or argument_spec(short)
    args = args or {}
    result = ArgumentSpecValidator(spec, **getattr(mod, "SPEC_KWARGS", {})).validate(concrete(args, spec))
    problems = ["%s: %s" % (module, m) for m in result.error_messages]
    if isinstance(args.get("policy"), dict):
        problems += check_document(args["policy"])
    return problems


def syntax_check(play_text, tmp_path):
    book = tmp_path / "example.yml"
    book.write_text(play_text)
    done = subprocess.run([ANSIBLE_PLAYBOOK, "--syntax-check", "-i", "localhost,", str(book)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    return [] if done.returncode == 0 else ["ansible-playbook --syntax-check: " + done.stdout + done.stderr]


def check_playbook(plays):
    problems = []
    for play in plays:
        if play["hosts"] != "localhost" and play.get("become") is not True:
            problems.append("play %r: no `become: true` (the modules need root on the hosts)" % play.get("name"))
        problems += [p for entry in play.get("roles") or [] for p in check_role_entry(entry)]
        problems += [p for key in PLAY_TASK_LISTS for task in play.get(key) or [] for p in check_task(task)]
    return problems


def metric_names():
    """The metrics the collection writes (metrics.py: family("kills_total", ...))."""
    with open(METRICS_SOURCE) as f:
        return set("ebpf_oom_" + n for n in re.findall(r'family\("([a-z_]+)"', f.read()))


def check_alerts(rules):
    problems = []
    known = metric_names()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if not rule.get("alert") or not rule.get("expr"):
                problems.append("rule %r: needs alert and expr" % rule)
                continue
            problems += ["alert %s: no metric %s" % (rule["alert"], m)
                         for m in re.findall(r"\bebpf_oom_[a-z_]+", rule["expr"]) if m not in known]
    return problems


def is_rule(item):
    return isinstance(item, dict) and "match" in item and "action" in item


def is_task(item):
    return isinstance(item, dict) and ("block" in item or len([k for k in item if k not in TASK_KEYWORDS]) == 1)


def check(example, tmp_path):
    """What is wrong with an example: a list of problems."""
    data = yaml.safe_load(example.text)
    if example.mark not in (None,) + MARKS:
        return ["unknown example mark %r (one of %s)" % (example.mark, ", ".join(MARKS))]
    if isinstance(data, dict) and "rules" in data and "name" in data:
        return check_document(data, example.mark)
    if example.mark:
        return ["only policy documents carry a mark"]
    if isinstance(data, dict) and "groups" in data:
        return check_alerts(data)
    if isinstance(data, dict) and data and all(k in role_spec_keys() for k in data):
        return check_role_vars(None, data)
    if isinstance(data, list) and data and all(isinstance(p, dict) and "hosts" in p for p in data):
        return check_playbook(data) or syntax_check(example.text, tmp_path)
    if isinstance(data, list) and data and all(is_rule(r) for r in data):
        return check_rules(data)
    if isinstance(data, list) and data and all(is_task(t) for t in data):
        return [p for task in data for p in check_task(task)]
    return ["not a policy document, rules, a playbook, tasks, role variables or alerting rules: "
            "show it as ```text, or make it one of them"]


def role_spec_keys():
    return set(k for r in ROLES for k in role_spec(r))


# ---------------------------------------------------------------- the tests

def test_every_readme_and_the_operations_docs_have_examples():
    where = set(e.path for e in EXAMPLES)
    assert {"README.md", "schemas/README.md"} <= where
    assert set("roles/%s/README.md" % r for r in ROLES) <= where
    for doc in ("docs/operations.md", "docs/troubleshooting.md"):
        assert doc in where, "%s has no YAML example" % doc


@pytest.mark.parametrize("example", EXAMPLES, ids=repr)
def test_yaml_example_works_as_shown(example, tmp_path):
    assert check(example, tmp_path) == []


# The checker itself: each kind of mistake is caught.

@pytest.mark.parametrize("text,problem", [
    ("name: x\nrules:\n  - {match: {comm: a, comm_prefix: b}, action: protect}\n", "give comm or comm_prefix"),
    ("name: x\nrules: []\nfallback: protect\n", "fallback: protect"),
    ("- {match: {cgroup: batch}, action: prefer, tier: 1}\n", "cgroup"),
    ("- hosts: all\n  roles: [ebpf.oom.database_server]\n", "become: true"),
    ("- hosts: all\n  become: true\n  roles:\n    - role: ebpf.oom.bpf_oom\n      vars: {bpf_oom_polices: []}\n",
     "bpf_oom_polices"),
    ("- hosts: all\n  become: true\n  roles:\n    - role: ebpf.oom.database_server\n"
     "      vars: {database_server_extra_rules: [{match: {comm: a}, action: kill}]}\n", "action"),
    ("- name: t\n  ebpf.oom.policy: {name: p, stat: absent}\n", "stat"),
    ("- name: t\n  ebpf.oom.verify: {object: /a.o, object_sha256: ab}\n", "mutually exclusive"),
    ("- name: t\n  ebpf.oom.policy:\n    policy: {name: p, rules: [{match: {pid: 0}, action: select}]}\n", "pid"),
    ("- name: t\n  ebpf.oom.polcy: {name: p}\n", "no module ebpf.oom.polcy"),
    ("bpf_oom_purge: maybe\n", "bpf_oom_purge"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: ebpf_oom_policy_load == 0\n", "ebpf_oom_policy_load"),
    ("just: text\n", "show it as ```text"),
])
def test_the_checker_catches(text, problem, tmp_path):
    found = check(Example("t.md", 1, text, None), tmp_path)
    assert any(problem in p for p in found), found


def test_a_marked_example_must_fail_as_it_says(tmp_path):
    clean = "name: x\nrules: [{match: {comm: a}, action: protect}]\n"
    assert check(Example("t.md", 1, clean, "lint-warns"), tmp_path) != []
    assert check(Example("t.md", 1, clean, "invalid"), tmp_path) != []
    assert check(Example("t.md", 1, "name: x\nrules: []\nfallback: protect\n", "lint-warns"), tmp_path) == []


def test_a_playbook_with_an_unknown_role_fails_the_syntax_check(tmp_path):
    text = "- hosts: all\n  become: true\n  roles: [no_such_role]\n"
    found = check(Example("t.md", 1, text, None), tmp_path)
    assert len(found) == 1 and "--syntax-check" in found[0] and "no_such_role" in found[0], found
