"""The monitoring files (monitoring/, docs/operations.md "Alerts and a dashboard"):

- the Prometheus rules pass `promtool check rules`, and their unit tests
  (monitoring/ebpf-oom.rules.test.yml) pass `promtool test rules`;
- those unit tests fail for a rule broken on purpose (one that never fires, fires before
  its `for`, or fires where it must not), so that each rule's tests can fail;
- the Grafana dashboard parses, with its data source an input and a host variable;
- every metric the rules, their tests and the dashboard read is one that the engine writes
  (metrics.metrics_text(), the function that renders the metrics file), with its labels,
  or one of node_exporter's own.

promtool comes from tests/setup-promtool (run by tests/setup): a missing one fails the tests.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.ebpf.oom.plugins.module_utils import metrics
from conftest import REPO

MONITORING = os.path.join(REPO, "monitoring")
RULES = os.path.join(MONITORING, "ebpf-oom.rules.yml")
RULE_TESTS = os.path.join(MONITORING, "ebpf-oom.rules.test.yml")
DASHBOARD = os.path.join(MONITORING, "grafana-dashboard.json")
SETUP_PROMTOOL = os.path.join(REPO, "tests", "setup-promtool")
ROLE_DEFAULTS = os.path.join(REPO, "roles", "bpf_oom", "defaults", "main.yml")
# node_exporter's metrics the rules and the dashboard read (textfile and systemd collectors).
NODE_EXPORTER = {"node_textfile_mtime_seconds", "node_systemd_unit_state"}
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"instance", "job"}
METRIC = re.compile(r"\b(?:ebpf_oom|node)_[a-z_]+\b")
RECORDED = re.compile(r"\bebpf_oom:[a-z0-9_:]+")


def load_rules():
    with open(RULES) as f:
        return yaml.safe_load(f)


def all_rules(rules):
    return [rule for group in rules["groups"] for rule in group["rules"]]


def rule_name(rule):
    return rule.get("alert") or rule["record"]


RULE_NAMES = [rule_name(r) for r in all_rules(load_rules())]
ALERTS_WITH_FOR = [rule_name(r) for r in all_rules(load_rules()) if r.get("alert") and r.get("for", "0m") != "0m"]
# (rule, text of its expr, the same made to fire where the tests say it must not)
TOO_WIDE = [
    ("EbpfOomPolicyNotLoaded", "== 0", ">= 0"),
    ("EbpfOomRestoreFailed", "== 1", ">= 0"),
    ("EbpfOomRestoreFailed", 'name="ebpf-oom-restore.service", ', ""),
    ("EbpfOomObserverNotLoaded", "== 0", ">= 0"),
    ("EbpfOomRuleMatchesNothing", "== 0", ">= 0"),
    ("EbpfOomMetricsStale", "> 600", ">= 0"),
    ("EbpfOomMetricsStale", 'file=~"(.*/)?ebpf_oom\\\\.prom"', 'file=~".*"'),
    ("EbpfOomKill", "time() - 900", "time() - 1e9"),
    ("EbpfOomShadowDisagrees", "> 0", ">= 0"),
]


def run(argv):
    """(exit code, stdout and stderr) of argv."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False)
    return done.returncode, done.stdout


@pytest.fixture(scope="module")
def promtool():
    rc, out = run([SETUP_PROMTOOL, "--cached"])
    assert rc == 0, "no promtool in the cache: tests/setup installs it with tests/setup-promtool\n" + out
    path = out.strip().splitlines()[-1]
    assert os.path.isabs(path) and os.access(path, os.X_OK), out
    return path


def engine_metrics():
    """{metric name: its label names} of the metrics file the engine renders, with a kill, a
    loaded observer, a loaded policy, a cgroup rule and a policy in shadow, so that every
    family has a sample."""
    key = json.dumps(["database", "/batch", "/batch"])
    state = {"totals": {key: 2}, "last": {key: 1700000000.0}}
    status = {"loaded": {"database": 1}, "rules": {"database": {"/batch": 1}}}
    judged = [{"policy": "database", "kills": 2, "disagreements": 1}]
    text = metrics.metrics_text(state, {"loaded": True, "kills": 2}, status, judged)
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.samples, "the metrics file renders %s without a sample: give it one here" % family.name
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def rule_exprs():
    return [rule["expr"] for rule in all_rules(load_rules())]


def dashboard_exprs():
    """Every PromQL expression of the dashboard: its panels' targets and its variables' queries."""
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    with open(DASHBOARD) as f:
        return list(walk(json.load(f)))


def test_promtool_is_installed_by_the_setup_script(promtool):
    rc, out = run([promtool, "--version"])
    assert rc == 0 and "promtool" in out, out


def test_setup_script_without_a_cached_promtool_says_so(tmp_path):
    done = subprocess.run([SETUP_PROMTOOL, "--cached"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=dict(os.environ, EBPF_OOM_CACHE=str(tmp_path)), check=False)
    assert done.returncode == 1 and done.stdout == "", done
    assert "no promtool" in done.stderr


def test_promtool_checks_the_rules(promtool):
    rc, out = run([promtool, "check", "rules", RULES])
    assert rc == 0, out
    assert "SUCCESS: %d rules found" % len(RULE_NAMES) in out, out


def test_the_rules_pass_their_unit_tests(promtool):
    rc, out = run([promtool, "test", "rules", RULE_TESTS])
    assert rc == 0, out
    assert "SUCCESS" in out, out


def test_every_alert_says_for_how_long_how_bad_and_what_to_do():
    for rule in all_rules(load_rules()):
        if rule.get("alert"):
            assert re.match(r"^\d+[smh]$", str(rule.get("for", ""))), rule
            assert rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), rule
            assert set(rule.get("annotations", {})) >= {"summary", "description"}, rule


def broken_copy(tmp_path, name, change):
    """The unit tests beside a copy of the rules in which `change` was applied to rule `name`."""
    rules = load_rules()
    changed = [change(rule) for rule in all_rules(rules) if rule_name(rule) == name]
    assert changed, "no rule %s in %s" % (name, RULES)
    with open(str(tmp_path / "ebpf-oom.rules.yml"), "w") as f:
        yaml.safe_dump(rules, f, sort_keys=False)
    shutil.copy(RULE_TESTS, str(tmp_path))
    return str(tmp_path / os.path.basename(RULE_TESTS))


def test_the_unit_tests_pass_on_an_unbroken_copy(promtool, tmp_path):
    """The control for the broken copies below: the copy itself changes nothing."""
    rc, out = run([promtool, "test", "rules", broken_copy(tmp_path, RULE_NAMES[0], lambda rule: None)])
    assert rc == 0, out


@pytest.mark.parametrize("name", RULE_NAMES)
def test_the_unit_tests_fail_for_a_rule_that_never_fires(promtool, tmp_path, name):
    rc, out = run([promtool, "test", "rules", broken_copy(tmp_path, name, lambda rule: rule.update(expr="vector(1) == 0"))])
    assert rc != 0 and name in out, out


@pytest.mark.parametrize("name", ALERTS_WITH_FOR)
def test_the_unit_tests_fail_for_an_alert_that_fires_before_its_for(promtool, tmp_path, name):
    rc, out = run([promtool, "test", "rules", broken_copy(tmp_path, name, lambda rule: rule.update({"for": "0m"}))])
    assert rc != 0 and name in out, out


@pytest.mark.parametrize("name,old,new", TOO_WIDE, ids=["%s:%s" % (n, o) for n, o, _new in TOO_WIDE])
def test_the_unit_tests_fail_for_an_alert_that_fires_where_it_must_not(promtool, tmp_path, name, old, new):
    def widen(rule):
        assert old in rule["expr"], "%s's expr no longer has %r: update TOO_WIDE" % (name, old)
        rule["expr"] = rule["expr"].replace(old, new)

    rc, out = run([promtool, "test", "rules", broken_copy(tmp_path, name, widen)])
    assert rc != 0 and name in out, out


def test_the_dashboard_parses():
    with open(DASHBOARD) as f:
        board = json.load(f)
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 39
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    variables = dict((v["name"], v) for v in board["templating"]["list"])
    assert "instance" in variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and ids
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


def test_every_metric_read_is_one_the_engine_or_node_exporter_writes():
    known = set(engine_metrics())
    recorded = set(r["record"] for r in all_rules(load_rules()) if r.get("record"))
    for where, exprs in (("rules", rule_exprs()), ("dashboard", dashboard_exprs())):
        used = set(m for e in exprs for m in METRIC.findall(e))
        unknown = used - known - NODE_EXPORTER
        assert not unknown, "%s read metrics nobody writes: %s" % (where, sorted(unknown))
        unrecorded = set(m for e in exprs for m in RECORDED.findall(e)) - recorded
        assert not unrecorded, "%s read rules nobody records: %s" % (where, sorted(unrecorded))
        # the check sees what it should: the metrics the alerts and panels are about
        assert {"ebpf_oom_policy_loaded", "ebpf_oom_observer_loaded", "ebpf_oom_kills_total",
                "ebpf_oom_last_kill_timestamp_seconds"} <= used, where


def test_the_unit_tests_feed_series_as_the_engine_writes_them():
    known = engine_metrics()
    with open(RULE_TESTS) as f:
        tests = yaml.safe_load(f)["tests"]
    seen = set()
    for test in tests:
        for series in test["input_series"]:
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$", series["series"])
            name, labels = m.group(1), set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2)))
            if name in NODE_EXPORTER:
                continue
            assert name in known, series
            assert labels == known[name] | TARGET_LABELS, series
            seen.add(name)
    assert {"ebpf_oom_policy_loaded", "ebpf_oom_kills_total"} <= seen


def test_the_metrics_file_pattern_matches_the_roles_default_file():
    with open(ROLE_DEFAULTS) as f:
        default = yaml.safe_load(f)["bpf_oom_metrics_file"]
    patterns = [p for e in rule_exprs() + dashboard_exprs() for p in re.findall(r'file=~"((?:[^"\\]|\\.)*)"', e)]
    assert len(patterns) >= 2, patterns
    for pattern in patterns:
        regex = pattern.replace("\\\\", "\\")  # a PromQL string's escapes
        assert re.fullmatch(regex, default) and re.fullmatch(regex, os.path.basename(default)), pattern
        assert not re.fullmatch(regex, "/var/lib/prometheus/node-exporter/ebpf_oomXprom"), pattern
