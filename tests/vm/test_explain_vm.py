"""ebpf.oom.explain beyond the memory cgroup OOMs of tests/vm/test_policy_language.py
(which check every prediction there against the real OOM): a global OOM's prediction in
the session's small hook guest, and a document previewed on a stock Debian kernel,
which has no hook but runs the task iterator."""

from lab import Lab, Policies, doc, killed_by, spec, task
from vmharness import play


def test_explain_predicts_a_global_oom(global_vm, tmp_path):
    lab, policies = Lab(global_vm), Policies(global_vm, tmp_path)
    holders = spec(task("big", 120), task("mid", 90), task("job", 60), memcg=None)
    try:
        with lab.scenario("explain-global", holders) as s:
            result = policies.apply(doc("pred", {"match": {"comm": "lab-big"}, "action": "protect"},
                                        {"match": {"comm": "lab-job"}, "action": "prefer",
                                         "tier": 1}), explain="global")
            explained = result["explain"]
            report = s.oom()
    finally:
        policies.remove_all()
    assert explained["oom"]["kind"] == "global", explained
    assert explained["victim"]["pid"] == s.pids["job"], explained
    assert explained["kernel_victim"]["pid"] == s.pids["big"], explained
    killed_by(report, "job", "pred", spared=["big", "mid"], constraint="CONSTRAINT_NONE")


def test_explain_previews_a_document_on_a_stock_kernel(stock_vm, stock_lab, tmp_path):
    """No hook, no policy: the document's prediction for the lab's memory cgroup, and the
    name of a policy that cannot be loaded there is a clear error."""
    with stock_lab.scenario("explain-stock", spec(task("big", 50), task("web", 30),
                                                  task("job", 20, cgroup="batch/job"))) as s:
        document = doc("preview", {"match": {"comm": "lab-big"}, "action": "protect"},
                       {"match": {"cgroup": s.path("batch")}, "action": "prefer", "tier": 1})
        result = play(stock_vm, [
            {"name": "preview", "ebpf.oom.explain": {"policy": document,
                                                     "oom": {"memcg": s.spec["memcg"]}}},
            {"name": "by name", "ebpf.oom.explain": {"name": "preview"}, "ignore_errors": True},
        ], tmp_path)
    preview = result["preview"]
    assert [r["pid"] for r in preview["ranking"]] == [s.pids["job"], s.pids["web"]], preview
    assert preview["kernel_victim"]["pid"] == s.pids["big"], preview
    refused = result["by name"]
    assert refused["failed"] and "no policy preview is loaded" in refused["msg"], refused
