"""Operator features against the fakes: filters, shards, ordering, project map,
verify, plan output and JSON logs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from asyncmigrate import copy_images
from asyncmigrate.errors import UsageError
from asyncmigrate.identity import ProjectMap, load_project_map
from asyncmigrate.selection import Selection, parse_shard, shard_of
from asyncmigrate.verify import verify_catalogs
from tests.conftest import Clouds, fast_config


def _add(clouds: Clouds, data: bytes | None = b"d" * 100, **attrs: object) -> str:
    attrs.setdefault("disk_format", "raw")
    attrs.setdefault("container_format", "bare")
    return str(clouds.src.add_image(data, **attrs)["id"])


async def test_filters_select_only_matching_images(clouds: Clouds) -> None:
    """Each filter narrows the run; the rest of the catalog is untouched."""
    big = _add(clouds, b"x" * 5000, name="ubuntu-big", tags=["linux", "lts"], visibility="public")
    _add(clouds, b"x" * 10, name="ubuntu-small", tags=["linux"])
    _add(clouds, b"x" * 5000, name="windows", tags=["linux", "lts"], owner="p2")
    selection = Selection(names=("ubuntu-*",), tags=frozenset({"lts"}), min_size=1000, visibility=frozenset({"public"}))
    run = await copy_images(fast_config(selection=selection), clouds.src_cloud, clouds.dst_cloud)
    assert [r.id for r in run.images] == [big]
    assert list(clouds.dst.images) == [big]


async def test_two_shards_cover_everything_exactly_once(clouds: Clouds) -> None:
    """Shard 0/2 and 1/2 together copy each image once, with no coordination."""
    ids = {_add(clouds, os.urandom(50)) for _ in range(20)}
    seen: list[str] = []
    for k in (0, 1):
        run = await copy_images(fast_config(selection=Selection(shard=(k, 2))), clouds.src_cloud, clouds.dst_cloud)
        seen += [r.id for r in run.images if r.outcome == "copied"]
    assert sorted(seen) == sorted(ids)
    assert 0 < sum(shard_of(i, 2) == 0 for i in ids) < len(ids)


def test_shard_syntax() -> None:
    """K/N with 0 <= K < N, anything else is a usage error."""
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)


async def test_referenced_images_first_and_order_by(clouds: Clouds) -> None:
    """An image naming a kernel_id is copied after the kernel; --order-by -size sorts the rest."""
    kernel = _add(clouds, b"k" * 10, name="kernel")
    ref = _add(clouds, b"r" * 10, name="uses-kernel", kernel_id=kernel)
    small = _add(clouds, b"s" * 100, name="small")
    large = _add(clouds, b"l" * 1000, name="large")
    order = []
    run = await copy_images(
        fast_config(concurrency=1, selection=Selection(order_by="-size")),
        clouds.src_cloud,
        clouds.dst_cloud,
        emit=lambda e: order.append(e.image_id) if type(e).__name__ == "ImageQueued" else None,
    )
    assert run.failed == 0
    assert order == [large, small, kernel, ref]
    plain: list[str] = []
    clouds.dst.images.clear()
    clouds.dst.deleted.clear()
    await copy_images(
        fast_config(concurrency=1),
        clouds.src_cloud,
        clouds.dst_cloud,
        emit=lambda e: plain.append(e.image_id) if type(e).__name__ == "ImageQueued" else None,
    )
    assert plain[-1] == ref


async def test_project_map_rewrites_owner_and_members(clouds: Clouds, tmp_path: Path) -> None:
    """Owner and members are translated; with --drop-unmapped-members unmapped members are left out and named."""
    src_a, src_b, unknown = "a" * 32, "b" * 32, "c" * 32
    image = _add(clouds, name="shared", visibility="shared", owner=src_a)
    clouds.src.add_member(image, src_b, "accepted")
    clouds.src.add_member(image, unknown, "pending")
    (tmp_path / "map.yaml").write_text(f"{src_a}: dst-a\n{src_b}: dst-b\n")

    async def no_names(name: str) -> str:
        raise AssertionError(f"ids only here, asked for {name}")

    pmap = await load_project_map(tmp_path / "map.yaml", unmapped_owner="fail", resolve_name=no_names)
    config = fast_config(project_map=pmap, drop_unmapped_members=True)
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "copied" and unknown in result.reason
    assert clouds.dst.get(image)["owner"] == "dst-a"
    assert {m: r.status for m, r in clouds.dst.members[image].items()} == {"dst-b": "accepted"}
    again = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert again.images[0].outcome == "skipped"
    check = await verify_catalogs(config, clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in check.images] == ["match"] and unknown in check.images[0].reason


async def test_unmapped_owner_is_reported_or_given_to_the_caller(clouds: Clouds) -> None:
    """An owner missing from the map fails that image, unless --unmapped-owner caller."""
    image = _add(clouds, owner="nobody-knows")
    strict = await copy_images(fast_config(project_map=ProjectMap({})), clouds.src_cloud, clouds.dst_cloud)
    assert strict.images[0].outcome == "failed" and "no mapping" in strict.images[0].reason
    assert image not in clouds.dst.images
    lenient = ProjectMap({}, unmapped_owner="caller")
    run = await copy_images(fast_config(project_map=lenient), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied"
    assert clouds.dst.get(image)["owner"] == "admin-project"


async def test_verify_finds_every_kind_of_difference(clouds: Clouds) -> None:
    """verify: match, missing, attribute/data/member differences, and extras with --strict."""
    same = _add(clouds, name="same")
    changed = _add(clouds, name="changed")
    _add(clouds, name="missing")
    shared = _add(clouds, name="shared", visibility="shared")
    await copy_images(fast_config(image_ids=(same, changed, shared)), clouds.src_cloud, clouds.dst_cloud)
    clouds.dst.images[changed].name = "renamed"
    clouds.src.add_member(shared, "p9", "accepted")
    clouds.dst.add_image(b"e", disk_format="raw", container_format="bare", name="extra")
    run = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    got = {r.name: r.outcome for r in run.images}
    assert got == {
        "same": "match",
        "changed": "differs",
        "missing": "missing",
        "shared": "differs",
        "extra": "extra-ignored",
    }
    assert int(run.exit_code) == 1
    strict = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud, strict=True)
    assert {r.name: r.outcome for r in strict.images}["extra"] == "extra"
    assert all(r.method == "GET" for r in clouds.dst.requests[-20:])


async def _cli(clouds: Clouds, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def test_plan_json_and_estimate(clouds: Clouds) -> None:
    """plan copy --output json: one entry per image, totals and the estimate at --rate."""
    _add(clouds, b"x" * 2_000_000, name="two-mb")
    _add(clouds, None, name="empty")
    code, out, err = await _cli(
        clouds, "plan", "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--rate", "1MiB", "--output", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert {i["action"] for i in doc["images"]} == {"copy", "create"}
    assert doc["totals"]["bytes"] == 2_000_000
    assert doc["estimate"]["seconds"] == pytest.approx(2_000_000 / 2**20)
    assert not clouds.dst.images
    code, out, _ = await _cli(clouds, "plan", "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--rate", "1MiB")
    assert "two-mb" in out and "about 2 s at 1.0 MiB/s" in out
    code, out, _ = await _cli(
        clouds, "plan", "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--max-rate", "512KiB", "--output", "json"
    )
    assert code == 0 and json.loads(out)["estimate"]["seconds"] == pytest.approx(2_000_000 / 2**19)


async def test_json_log_format_is_one_object_per_line(clouds: Clouds) -> None:
    """--log-format json: every line of both streams parses, with a time and a level; the last is the summary."""
    _add(clouds, name="a")
    clouds.dst.add_image(b"z", id=_add(clouds, name="b"), name="not-b", disk_format="raw", container_format="bare")
    code, out, err = await _cli(
        clouds, "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--log-format", "json", "--no-journal"
    )
    assert code == 1
    events = [json.loads(line) for line in (out + err).splitlines() if line.strip()]
    assert all({"time", "level", "event"} <= set(e) for e in events)
    assert {e["outcome"] for e in events if e["event"] == "image"} == {"copied", "conflict"}
    summary = json.loads(out.splitlines()[-1])
    assert summary["event"] == "summary" and summary["failed"] == 1


async def test_plan_and_verify_print_one_full_line_per_image_into_a_pipe(clouds: Clouds) -> None:
    """Into a pipe (a log file, CI, kubectl logs) plan and verify print one line per image with
    its id, its whole name, its action or outcome and its whole reason — never cut or wrapped."""
    long_name = "ubuntu-24.04-server-cloudimg-amd64-" + "with-a-very-long-suffix-" * 5 + "end"
    image = _add(clouds, b"p" * 5000, name=long_name)
    other = _add(clouds, b"q" * 5000, name="conflicting-" + "x" * 60)
    props = {f"property_number_{i:02d}": "a value that differs" for i in range(8)}
    clouds.dst.add_image(b"q" * 5000, id=other, name="conflicting-" + "x" * 60, disk_format="raw",
                         container_format="bare", **props)  # fmt: skip
    code, out, err = await _cli(clouds, "plan", "copy", "--src-cloud", "src", "--dst-cloud", "dst")
    assert code == 1, err  # a conflict row
    lines = {line.split("\t")[1]: line for line in out.splitlines() if line.count("\t") >= 3}
    assert long_name in lines[image] and lines[image].startswith("copy\t")
    reason = "destination differs in: " + ", ".join(sorted(props))
    assert lines[other].startswith("conflict\t") and lines[other].split("\t")[4] == reason

    await copy_images(fast_config(image_ids=(image,)), clouds.src_cloud, clouds.dst_cloud)
    clouds.dst.images[image].properties.update(props)
    code, out, err = await _cli(clouds, "verify", "--src-cloud", "src", "--dst-cloud", "dst")
    assert code == 1, err
    lines = {line.split("\t")[1]: line for line in out.splitlines() if line.count("\t") >= 3}
    assert lines[image].startswith("differs\t") and long_name in lines[image]
    assert all(f"{key}: None != 'a value that differs'" in lines[image] for key in props)
    assert lines[other].startswith("differs\t")  # the conflicting one was never copied over
    assert max(len(line) for line in out.splitlines()) > 200  # nothing was cut to a terminal's width
