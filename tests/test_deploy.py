"""The Kubernetes manifest stays consistent with the CLI it runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from asyncmigrate.options import build_parser

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "indexed-job.yaml"


def test_indexed_job_shards_match_completions_and_parse() -> None:
    """An Indexed Job whose SHARDS equals completions and parallelism, running a command the CLI accepts."""
    job = yaml.safe_load(MANIFEST.read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["SHARDS"]) == spec["completions"] == spec["parallelism"]
    script = container["args"][0]
    assert script.startswith("exec asyncmigrate ")
    index = 2
    argv = re.sub(r'"\$\{JOB_COMPLETION_INDEX\}/\$\{SHARDS\}"', f"{index}/{env['SHARDS']}", script)
    argv = argv.replace("${JOB_COMPLETION_INDEX}", str(index)).replace('"', "")
    args = build_parser().parse_args(argv.split()[2:])
    assert args.command == "copy" and args.shard == f"{index}/{env['SHARDS']}"
    assert str(args.journal) == f"/state/journal-{index}.sqlite"
