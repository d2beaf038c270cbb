"""Template-level detection in the service: each event gets its template's model_predict verdict;
templates without one are reported on ``templates:new`` and exported for model_predict.py."""

from __future__ import annotations

import json
import subprocess

import pandas as pd

from validation.model_predict import load_requests

NOVEL = "050603 235959 999 WARN dfs.Quota: quota of volume {} exceeded by {} bytes"


def _predictions(case, path) -> dict[str, str]:
    templates = pd.read_csv(case.parsed / "templates.csv")["event_template"].tolist()
    verdicts = {t: ("abnormal" if i % 3 == 1 else "normal") for i, t in enumerate(templates)}
    unclassified = templates[-1]
    del verdicts[unclassified]  # never classified: unknown, reported as new
    rows = [{"data_source": "hdfs", "log": t, "label": p, "response": "", "pred": p}
            for t, p in verdicts.items()]
    pd.DataFrame(rows).to_parquet(path)
    return verdicts


def test_events_get_their_template_verdict_and_unknown_templates_are_reported(
        redis_server, stream_case, serving_cli, tmp_path):
    verdicts = _predictions(stream_case, tmp_path / "predictions.parquet")
    log = tmp_path / "with_novel.log"
    lines = stream_case.log.read_text().splitlines()
    lines += [NOVEL.format(f"vol{i}", 1000 * i) for i in range(3)]
    log.write_text("\n".join(lines) + "\n")
    worker = subprocess.Popen(serving_cli.command(
        "detect", "--redis", redis_server.url, "--parsed", stream_case.parsed, "--predictions",
        tmp_path / "predictions.parquet", "--exit-when-idle", 4), cwd=serving_cli.root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = serving_cli.run("replay", "--redis", redis_server.url, "--input", log, "--rate", 5000,
                               "--no-progress")
        assert done.returncode == 0, done.stderr
        assert worker.wait(timeout=120) == 0
    finally:
        worker.kill()
    client = redis_server.client()
    served = {}
    for key in client.scan_iter("logrl:verdicts:*"):
        served.update({int(k): v.decode() for k, v in client.hgetall(key).items()})
    structured = pd.read_parquet(stream_case.parsed / "structured.parquet")
    expected = {int(n): verdicts.get(t, "unknown")
                for n, t in zip(structured["line_no"], structured["event_template"], strict=True)}
    expected.update({len(structured) + i + 1: "unknown" for i in range(3)})
    assert served == expected
    alerts = {k.decode() for k in client.hkeys("logrl:alerts")}
    assert alerts == {f"e{n}" for n, v in expected.items() if v == "abnormal"}
    assert client.xlen("logrl:alerts:stream") == len(alerts)
    reported = [json.loads(json.dumps({k.decode(): v.decode() for k, v in f.items()}))
                for _, f in client.xrange("logrl:templates:new")]
    unclassified = pd.read_csv(stream_case.parsed / "templates.csv")["event_template"].iloc[-1]
    texts = sorted(r["template"] for r in reported)
    assert len(texts) == 2 and unclassified in texts
    assert any(t.startswith("quota of volume") for t in texts)
    exported = serving_cli.run("new-templates", "--redis", redis_server.url, "--out", tmp_path / "new",
                               "--data-source", "hdfs")
    assert exported.returncode == 0, exported.stderr
    requests = load_requests(tmp_path / "new" / "new_templates.parquet")
    assert sorted(requests["log"]) == texts
    assert all(m[-1]["content"].endswith(t) or t in m[-1]["content"]
               for m, t in zip(requests["messages"], requests["log"], strict=True))
