"""One real fine-tune through the whole stack: the API accepts it, the Celery worker trains it.

    python bench/gpu_job.py prepare --dest MODEL_DIR --data FILE.jsonl [--tiny]
    python bench/gpu_job.py submit --model-dir MODEL_DIR --data FILE.jsonl --gpu H200 --out F.json

`prepare` writes a random-weight model shaped like a catalog model (default Llama-3.2-1B: its
config, vocabulary size included, with the ids of devtools.tinymodel's offline tokenizer) and a text
dataset just long enough for `--steps` packed optimizer steps. `submit` talks to a running API
(bench/gpu_job.sh starts it and one worker on the embedded SQLite database and broker) over HTTP
as a client would: upload the dataset, estimate LoRA on `--gpu`, submit the job with that
estimate, follow it to the end, and write the estimate, the job (with its metered actuals) and a
text comparison beside the JSON. `--tiny` builds a two-layer model for a dry run on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.catalog.model_catalog import get_model_config
from devtools.tinymodel import corpus_sentences, save_tokenizer

URL = os.environ.get("TUNECOST_URL", "http://127.0.0.1:8000")
MODEL = "meta-llama/Llama-3.2-1B"
# The tiny dry-run model: devtools.tinymodel's default shape, any size runs the same code path.
TINY_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
RECORD_SHARE = 0.75  # a record fills at most this share of seq_len (approximate token count)
EVAL_FRACTION = 0.05  # the job spec's default held-out share (app/jobs/spec.py)
DATA_MARGIN = 1.02  # a little more text than the steps need, so no epoch boundary is crossed
TERMINAL = ("succeeded", "failed", "cancelled", "budget_exceeded")
WORKER_WAIT_S = 180  # a cold worker imports torch and transformers before it beats
GIB = 1024**3


def prepare(args: argparse.Namespace) -> None:
    """Write the random-weight model folder and the dataset."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dest = Path(args.dest)
    tokenizer = save_tokenizer(dest)
    config = dict(TINY_CONFIG if args.tiny else get_model_config(args.model))
    config.pop("architectures", None)
    config.pop("torch_dtype", None)
    model_type = config.pop("model_type")
    config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    hf_config = AutoConfig.for_model(model_type, **config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds, not minutes, for 1B weights
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    model.save_pretrained(dest, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {dest}: {params:,} params ({dtype}), {time.perf_counter() - started:.1f}s")
    del model

    # Records shorter than seq_len: the estimate counts an uploaded example longer than seq_len
    # as cut to seq_len even when packing (app/estimator/workload.py), the worker packs it whole.
    need = args.steps * args.micro_batch * args.seq_len / (1 - EVAL_FRACTION) * DATA_MARGIN
    rng = random.Random(0)
    sentences = corpus_sentences()
    lengths = [len(tokenizer(s, add_special_tokens=False)["input_ids"]) + 1 for s in sentences]
    lines, tokens = [], 0
    while tokens < need:
        parts: list[str] = []
        size = 1  # BOS
        while True:
            i = rng.randrange(len(sentences))
            if parts and size + lengths[i] > RECORD_SHARE * args.seq_len:
                break
            parts.append(sentences[i])
            size += lengths[i]
        tokens += size + 1  # + EOS between packed records
        lines.append(json.dumps({"text": " ".join(parts)}) + "\n")
    data = Path(args.data)
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(lines))
    print(f"dataset {data}: {len(lines)} records, ~{tokens:,} tokens (need {need:,.0f})")


def _check(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        sys.exit(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
    return r.json()


def _submit_key() -> str:
    from app.auth import service
    from app.db import session_scope
    from app.models import Scope

    with session_scope() as session:
        _, secret = service.create(session, name="gpu-job", scope=Scope.SUBMIT, team="bench")
    return secret


def _wait_for_worker(client: httpx.Client) -> dict[str, Any]:
    deadline = time.monotonic() + WORKER_WAIT_S
    while True:
        try:
            if "Authorization" not in client.headers and client.get("/v1/health").is_success:
                # Up, so its database is migrated: a key can be made, and health lists the
                # workers to a key only.
                client.headers["Authorization"] = f"Bearer {_submit_key()}"
            health = client.get("/v1/health").json()
            if health["workers"]["live"] > 0:
                return dict(health)
        except (httpx.HTTPError, KeyError, ValueError):
            pass  # the API is still starting
        if time.monotonic() > deadline:
            sys.exit(f"no live worker after {WORKER_WAIT_S}s")
        time.sleep(1)


def submit(args: argparse.Namespace) -> None:
    """Estimate and run the LoRA job over HTTP; write the evidence."""
    client = httpx.Client(base_url=URL, timeout=120)
    health = _wait_for_worker(client)
    print(f"server: {health['workers']}")
    data = Path(args.data)
    with data.open("rb") as fh:
        ds = _check(
            client.post(
                "/v1/datasets",
                files={"file": (data.name, fh, "application/jsonl")},
                data={"name": "gpu-job text", "model_path": str(args.model_dir)},
            )
        )
    training = {
        "seq_len": args.seq_len,
        "micro_batch_size": args.micro_batch,
        "packing": True,
        "precision": "bf16_true" if args.gpu != "cpu" else "fp32",
        "attention": "sdpa",
    }
    lora = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    est_in = {
        "model": {"path": str(args.model_dir)},
        "dataset": {"dataset_id": ds["id"]},
        "methods": ["lora"],
        "training": training,
        "lora": lora,
        "hardware": {"gpu": args.gpu, "num_gpus": 1},
    }
    est = _check(client.post("/v1/estimates", json=est_in))
    job = _check(
        client.post(
            "/v1/jobs",
            json={
                "estimate_id": est["id"],
                "method": "lora",
                "dataset_id": ds["id"],
                "max_steps": args.steps,
                "max_cost_usd": args.max_cost,
                "tags": {"team": "bench", "project": "gpu-job"},
            },
        )
    )
    print(f"job {job['id']} -> {job['queue']}, estimate {est['id']}")
    events = _follow(client, job["id"], args.timeout)
    job = _check(client.get(f"/v1/jobs/{job['id']}"))
    report = {
        "health": health,
        "dataset": ds,
        "estimate_request": est_in,
        "estimate": est,
        "job": job,
        "events": events,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = compare(est, job, tokens_per_step=args.micro_batch * args.seq_len)
    out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    if job["status"] != "succeeded":
        sys.exit(f"job ended {job['status']}: {job.get('error')}")


def _follow(client: httpx.Client, job_id: str, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    events: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        page = _check(
            client.get(
                f"/v1/jobs/{job_id}/events", params={} if after is None else {"after": after}
            )
        )
        for ev in page["items"]:
            after = ev["id"]
            events.append(ev)
            if ev.get("step") is not None:
                print(
                    f"step {ev['step']}/{ev.get('total_steps')} loss {ev.get('loss') or 0:.3f} "
                    f"{ev.get('tokens_per_s') or 0:,.0f} tok/s"
                )
        status = _check(client.get(f"/v1/jobs/{job_id}"))["status"]
        if status in TERMINAL:
            return events
        if time.monotonic() > deadline:
            client.post(f"/v1/jobs/{job_id}/cancel")
            sys.exit(f"job {job_id} still {status} after {timeout_s}s: cancelled")
        time.sleep(2)


def _pct(estimated: float | None, measured: float | None) -> str:
    if not estimated or not measured:
        return "-"
    return f"{100 * (estimated - measured) / measured:+.1f}%"


def compare(est: dict[str, Any], job: dict[str, Any], *, tokens_per_step: int) -> str:
    """Estimate vs metered actuals of the job, one quantity a line."""
    mr = est["results"]["lora"]
    memory = mr["memory"]
    act = job.get("actuals") or {}
    cuda = act.get("peak_memory_kind") == "cuda_allocated"
    overhead_s = float((mr.get("time") or {}).get("overhead_s") or 0)
    est_train_s = float(job["est_gpu_hours"]) / int(job["num_gpus"]) * 3600 - overhead_s
    steps = int(job["max_steps"] or mr["steps"])
    est_tps = steps * tokens_per_step / est_train_s if est_train_s > 0 else None
    # Memory like with like (the three quantities of the estimate): torch's allocated and
    # reserved peaks, and what must fit (CUDA context included) against the process's memory
    # as the driver counts it.
    rows = [
        ("peak allocated GiB", memory.get("allocated_bytes"), act.get("peak_memory_bytes"), GIB),
        ("peak reserved GiB", memory.get("reserved_bytes"), job.get("act_reserved_bytes"), GIB),
        (
            "must fit vs device peak GiB",
            memory["per_gpu_bytes"],
            job.get("act_device_peak_bytes"),
            GIB,
        ),
        ("tokens/s (training)", est_tps, act.get("processed_tokens_per_s"), 1),
        ("training s", est_train_s, act.get("train_s"), 1),
        ("overhead s (wall - train)", overhead_s, _overhead(act), 1),
        ("GPU-hours", job.get("est_gpu_hours"), job.get("act_gpu_hours"), 1),
    ]
    lines = [f"{'quantity':<30}{'estimate':>12}{'measured':>12}{'error':>10}"]
    for name, e, m, unit in rows:
        es = "-" if e is None else f"{e / unit:,.4g}"
        ms = "-" if m is None else f"{m / unit:,.4g}"
        lines.append(f"{name:<30}{es:>12}{ms:>12}{_pct(e, m):>10}")
    peak = (job.get("errors") or {}).get("peak_bytes") or {}
    if peak.get("estimated_quantity"):
        lines.append(
            f"the job's peak_bytes error (the report's): {peak.get('estimated_quantity')} vs "
            f"{peak.get('actual_quantity')} {peak.get('error_pct', 0):+.1f}%"
        )
    if not cuda:
        lines.append(f"peak measured as {act.get('peak_memory_kind')}, not CUDA's allocator")
    lines.append(
        f"device {act.get('device_name')} ({act.get('device_kind')}), steps {act.get('steps')}, "
        f"tokens {act.get('tokens_processed')}, mfu {act.get('mfu')} (prior {mr.get('mfu')}), "
        f"energy {act.get('energy_kwh')} kWh, final loss {act.get('final_loss')}"
    )
    lines.append("error = (estimate - measured) / measured")
    return "\n".join(lines)


def _overhead(act: dict[str, Any]) -> float | None:
    if act.get("wall_s") is None or act.get("train_s") is None:
        return None
    return float(act["wall_s"]) - float(act["train_s"])


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "submit"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True, help="the JSONL dataset file")
        p.add_argument("--steps", type=int, default=300, help="optimizer steps of the job")
        p.add_argument("--seq-len", type=int, default=1024)
        p.add_argument("--micro-batch", type=int, default=8)
    prep = sub.choices["prepare"]
    prep.add_argument("--dest", required=True, help="model folder (under a model root)")
    prep.add_argument("--model", default=MODEL, help="catalog model whose shape to build")
    prep.add_argument("--tiny", action="store_true", help="a two-layer model (CPU dry run)")
    sub_p = sub.choices["submit"]
    sub_p.add_argument("--model-dir", required=True)
    sub_p.add_argument("--gpu", default="H200", help="catalog GPU the estimate is made for")
    sub_p.add_argument("--out", required=True, help="JSON path (text beside it)")
    sub_p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the job")
    sub_p.add_argument("--max-cost", type=float, default=20.0, help="the job's budget, USD")
    return parser.parse_args()


def main() -> None:
    """Dispatch the subcommand."""
    args = _parse()
    prepare(args) if args.cmd == "prepare" else submit(args)


if __name__ == "__main__":
    main()
