"""`tunecost datasets ...`, `jobs submit` and `keys` as subprocesses against a live API: ids are
printed whole in 80 columns, and a unique start of an id is taken wherever an id is."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest

from devtools.tinymodel import make_tiny_dataset
from tests.live_api import LiveApi
from tests.support import ROOT

pytestmark = pytest.mark.slow
NARROW = "80"  # the terminal width that cut ids before (`job_56…`)


def _cli(live_api: LiveApi, key: str | None, *args: str, columns: str = NARROW) -> Any:
    env = {**os.environ, "TUNECOST_URL": live_api.url, "COLUMNS": columns}
    env.pop("TUNECOST_API_KEY", None)
    if key:
        env["TUNECOST_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_upload_list_show_submit_by_prefixes(
    live_api: LiveApi, keys: dict[str, str], tmp_path: Path
) -> None:
    data = make_tiny_dataset(tmp_path / "cli-ds.jsonl", n=40, fmt="alpaca")
    up = _cli(live_api, keys["submit"], "datasets", "upload", str(data), "--name", "cli ds")
    assert up.returncode == 0, up.stderr
    ds_id = re.search(r"dataset (ds_[0-9a-f]{32}): 40 examples \(alpaca\)", up.stdout)
    assert ds_id, up.stdout
    quiet = _cli(live_api, keys["submit"], "datasets", "upload", str(data), "-q")
    assert re.fullmatch(r"ds_[0-9a-f]{32}\n", quiet.stdout), quiet.stdout

    listed = _cli(live_api, keys["read"], "datasets", "list")
    assert listed.returncode == 0, listed.stderr
    assert ds_id[1] in listed.stdout and quiet.stdout.strip() in listed.stdout
    assert "…" not in listed.stdout

    shown = _cli(live_api, keys["read"], "datasets", "show", ds_id[1][:12])
    assert shown.returncode == 0, shown.stderr
    assert f"dataset {ds_id[1]} (cli ds)" in shown.stdout and "alpaca 40" in shown.stdout

    est = _cli(
        live_api,
        keys["submit"],
        "estimate",
        "--url",
        live_api.url,
        "--model",
        "openai-community/gpt2",
        "--dataset-id",
        ds_id[1][3:13],
        "--gpu",
        "A100-80GB",
        "-q",
    )
    assert est.returncode == 0, est.stderr
    est_id = est.stdout.strip()
    assert re.fullmatch(r"est_[0-9a-f]{32}", est_id)

    # No worker serves A100-80GB here: the job waits in its queue, and is cancelled by prefix.
    job = _cli(
        live_api,
        keys["submit"],
        "jobs",
        "submit",
        "--estimate",
        est_id[:12],
        "--method",
        "qlora",
        "--max-cost",
        "50",
        "--tag",
        "project=cli-prefix",
        "-q",
    )
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip()
    assert re.fullmatch(r"job_[0-9a-f]{32}", job_id)
    listed = _cli(live_api, keys["read"], "jobs", "list", "--tag", "project=cli-prefix")
    assert job_id in listed.stdout and "…" not in listed.stdout
    wide = _cli(live_api, keys["read"], "jobs", "list", "--tag", "project=cli-prefix", "--wide")
    row = next(line for line in wide.stdout.splitlines() if job_id in line)
    assert "qlora" in row and "openai-community/gpt2" in row  # one line per row
    cancelled = _cli(live_api, keys["submit"], "jobs", "cancel", job_id[4:12])
    assert cancelled.returncode == 0 and f"job {job_id}: cancelled" in cancelled.stdout

    flags = _cli(
        live_api,
        keys["submit"],
        "jobs",
        "submit",
        "--method",
        "lora",
        "--model",
        "openai-community/gpt2",
        "--dataset",
        ds_id[1][:10],
        "--gpu",
        "A100-80GB",
        "--seq-len",
        "128",
    )
    assert flags.returncode == 0, flags.stderr
    assert re.search(r"job job_[0-9a-f]{32} queued: lora of openai-community/gpt2", flags.stdout)


def test_an_ambiguous_or_unknown_prefix_is_refused_with_the_apis_words(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    missing = _cli(live_api, keys["read"], "jobs", "show", "job_ffffffffffff")
    assert missing.returncode == 2 and "404: no job with id 'job_ffffffffffff'" in missing.stderr
    short = _cli(live_api, keys["read"], "datasets", "show", "ds_ab")
    assert short.returncode == 2 and "at least 4 characters" in short.stderr


def test_keys_list_shows_whole_ids_and_revoke_takes_a_prefix(
    live_api: LiveApi, keys: dict[str, str]
) -> None:
    made = _cli(live_api, None, "keys", "create", "--scope", "read", "--name", "short-lived")
    key_id = re.search(r"key (key_[0-9a-f]{32})", made.stdout)
    assert made.returncode == 0 and key_id, made.stdout
    listed = _cli(live_api, None, "keys", "list")
    assert key_id[1] in listed.stdout and "…" not in listed.stdout
    revoked = _cli(live_api, None, "keys", "revoke", key_id[1][:14])
    assert revoked.returncode == 0 and f"revoked {key_id[1]}" in revoked.stdout
    missing = _cli(live_api, None, "keys", "revoke", "key_ffffffffffffffff")
    assert missing.returncode == 1 and "no API key with id" in missing.stdout


def test_upload_a_save_to_disk_folder_and_a_csv_with_columns(
    live_api: LiveApi, keys: dict[str, str], tmp_path: Path
) -> None:
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(12)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "qa-folder"), num_shards=2)
    folder = _cli(
        live_api,
        keys["submit"],
        "datasets",
        "upload",
        str(tmp_path / "qa-folder"),
        "--columns",
        "prompt=question,completion=answer",
        "--json",
    )
    assert folder.returncode == 0, folder.stderr
    body = json.loads(folder.stdout)
    assert (body["container"], body["name"], body["num_examples"]) == ("hf_disk", "qa-folder", 12)
    (tmp_path / "qa.csv").write_text(
        "question,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in rows)
    )
    refused = _cli(live_api, keys["submit"], "datasets", "upload", str(tmp_path / "qa.csv"))
    assert refused.returncode == 2
    assert "unknown_format: 12 rows, e.g. rows 1, 2, 3" in refused.stderr
    assert "columns=prompt=question,completion=answer" in refused.stderr


def test_delete_asks_first_and_takes_a_prefix(
    live_api: LiveApi, keys: dict[str, str], tmp_path: Path
) -> None:
    data = make_tiny_dataset(tmp_path / "doomed.jsonl", n=5, fmt="text")
    up = _cli(live_api, keys["submit"], "datasets", "upload", str(data), "-q")
    assert up.returncode == 0, up.stderr
    ds_id = up.stdout.strip()

    unasked = _cli(live_api, keys["submit"], "datasets", "delete", ds_id[:12])  # no answer: no
    assert unasked.returncode == 1, unasked.stdout + unasked.stderr
    assert _cli(live_api, keys["read"], "datasets", "show", ds_id).returncode == 0

    gone = _cli(live_api, keys["submit"], "datasets", "delete", ds_id[:12], "--yes")
    assert gone.returncode == 0, gone.stderr
    assert f"deleted dataset {ds_id} (doomed.jsonl)" in gone.stdout
    again = _cli(live_api, keys["read"], "datasets", "show", ds_id)
    assert again.returncode == 2 and "no dataset" in again.stderr, again.stderr
