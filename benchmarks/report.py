"""The run's table (with ratios), the targets, the JSON file and the plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "plot",
    "real_small_table",
    "real_small_targets",
    "startup_line",
    "startup_table",
    "startup_targets",
    "table",
    "targets",
    "write_json",
]

Summary = dict[str, Any]
MB = 1_000_000
MiB = 1024 * 1024


def _get(s: dict[str, Summary], key: str, field: str) -> float | None:
    v = s.get(key, {}).get(field)
    return float(v) if v is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(s: dict[str, Summary]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None: not measured)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, *, most: bool = False, unit: str = "×") -> None:
        met = None if value is None else (value <= limit if most else value >= limit)
        out.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": met, "most": most})

    full, server = _get(s, "single/am-full", "mib_s"), _get(s, "single/am-server", "mib_s")
    hashpipes = [v for v in (_get(s, "single/hashpipe", "mib_s"), _get(s, "single/hashpipe-thread", "mib_s")) if v]
    add("verified ≥ 3 × naive with md5+sha512", _ratio(full, _get(s, "single/naive-hash", "mib_s")), 3.0)
    add("verified ≥ 0.9 × hash-bound pipe (sha512, best of loop/thread)", _ratio(full, max(hashpipes or [0])), 0.9)
    add("unverified ≥ 0.9 × raw ceiling", _ratio(server, _get(s, "single/pipe", "mib_s")), 0.9)
    rss8 = _get(s, "concurrency/8", "peak_rss_mib")
    rss8_mb = rss8 * MiB / MB if rss8 else None
    add("peak RSS ≤ 120 MB at concurrency 8, default flags", rss8_mb, 120, most=True, unit="MB")
    sizes = sorted((v for v in s.values() if v["group"] == "size" and v.get("peak_rss_mib")), key=lambda v: v["x"])
    spread = None
    if len(sizes) >= 2:
        base = sizes[0]["peak_rss_mib"]
        spread = max(abs(v["peak_rss_mib"] - base) / base for v in sizes) * 100
    add("peak RSS flat (±10 %) from the smallest to the largest image", spread, 10, most=True, unit="%")
    add("small images ≥ 300 images/s", _get(s, "small/default", "images_s"), 300, unit="images/s")
    # The same targets under uvloop + mallopt, when measured: information for the lead.
    fuv, suv = _get(s, "single/am-full-uv", "mib_s"), _get(s, "single/am-server-uv", "mib_s")
    if fuv is not None:
        add("(uvloop) verified ≥ 3 × naive with md5+sha512", _ratio(fuv, _get(s, "single/naive-hash", "mib_s")), 3.0)
        hp_uv = _get(s, "single/hashpipe-uv", "mib_s")
        add("(uvloop) verified ≥ 0.9 × hash-bound pipe, uvloop", _ratio(fuv, hp_uv), 0.9)
    if suv is not None:
        add("(uvloop) unverified ≥ 0.9 × raw ceiling, uvloop", _ratio(suv, _get(s, "single/pipe-uv", "mib_s")), 0.9)
    rss8uv = _get(s, "concurrency/8-uv", "peak_rss_mib")
    if rss8uv is not None:
        add("(uvloop) peak RSS ≤ 120 MB at concurrency 8", rss8uv * MiB / MB, 120, most=True, unit="MB")
    return out


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "–" if v is None else format(v, spec)


def table(s: dict[str, Summary], real: dict[str, Any] | None) -> str:
    """A Markdown table of every figure, ratios to the naive baseline and the raw ceiling."""
    naive, naive_h = _get(s, "single/naive", "mib_s"), _get(s, "single/naive-hash", "mib_s")
    raw = _get(s, "single/pipe", "mib_s")
    lines = [
        "| group | variant | MiB/s | images/s | × naive | × naive+hash | × raw ceiling "
        "| client CPU s/GiB | fakes CPU s/GiB | peak RSS MiB | RSS before MiB | n |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in s.values():
        if v.get("mib_s") is None:
            errors = "; ".join(v.get("errors", [])) or "not measured"
            lines.append(f"| {v['group']} | {v['label']} | FAILED: {errors} ||||||||||")
            continue
        small = v["group"] == "small" or "small" in v["key"]
        n = str(v["repeats"]) + (" (single run)" if v["repeats"] == 1 else "")
        if v.get("failed"):
            n += f", {v['failed']} failed"
        if v.get("others_cores", 0) > 0.25:
            n += f", other load up to {v['others_cores']:.1f} cores"
        lines.append(
            "| {g} | {label} | {mib} | {ips} | {rn} | {rh} | {rr} | {cpu} | {srv} | {rss} | {before} | {n} |".format(
                g=v["group"],
                label=v["label"],
                mib=_fmt(v["mib_s"]) if not small else _fmt(v["mib_s"], ".1f"),
                ips=_fmt(v["images_s"]) if small or v["images"] > 1 else "",
                rn="" if small else _fmt(_ratio(v["mib_s"], naive), ".2f"),
                rh="" if small else _fmt(_ratio(v["mib_s"], naive_h), ".2f"),
                rr="" if small else _fmt(_ratio(v["mib_s"], raw), ".2f"),
                cpu=_fmt(v["client_cpu_s_per_gib"], ".2f") if not small else f"{v['client_cpu_s']:.1f} s total",
                srv=_fmt(v["server_cpu_s_per_gib"], ".2f") if not small else "",
                rss=_fmt(v["peak_rss_mib"]),
                before=_fmt(v["rss_before_mib"]),
                n=n,
            )
        )
    if real:
        lines.append("")
        lines.append(f"Real Glance pair (glance-api, {real.get('size_mib', 0):.0f} MiB image, single run each):")
        lines.append("")
        lines.append("| real Glance | MB/s | × curl upload to dst | client CPU s/GiB | peak RSS MiB |")
        lines.append("|---|---:|---:|---:|---:|")
        curl_dst = real.get("curl_upload_dst", {}).get("mb_s")
        for key, label in (
            ("curl_download_src", "curl download from source (→ /dev/null)"),
            ("curl_upload_src", "curl upload into source (seeding)"),
            ("curl_upload_dst", "curl upload into destination: the server's own limit"),
            ("asyncmigrate", "asyncmigrate copy source → destination, default flags"),
            ("asyncmigrate_server", "asyncmigrate copy, verify=server"),
        ):
            r = real.get(key)
            if not r:
                continue
            if "error" in r:
                lines.append(f"| {label} | FAILED: {r['error']} ||||")
                continue
            lines.append(
                f"| {label} | {_fmt(r.get('mb_s'))} | {_fmt(_ratio(r.get('mb_s'), curl_dst), '.2f')} "
                f"| {_fmt(r.get('client_cpu_s_per_gib'), '.2f')} | {_fmt(r.get('peak_rss_mib'))} |"
            )
        if real.get("skipped"):
            lines.append(f"| skipped: {real['skipped']} |||||")
    return "\n".join(lines)


def targets_text(rows: list[dict[str, Any]]) -> str:
    """One line per target: MET / NOT MET / not measured."""
    out = []
    for t in rows:
        state = "not measured" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        value = "–" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
        bound = "≤" if t.get("most", "RSS" in t["target"]) else "≥"
        out.append(f"  [{state:>12}] {t['target']}: {value} (target {bound} {t['limit']:g} {t['unit']})")
    return "\n".join(out)


def real_small_targets(rs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 11's request targets on the real pair (None: the group did not run: not measured)."""
    summary = (rs or {}).get("summary", {})
    am, noop = summary.get("asyncmigrate", {}), summary.get("noop", {})
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, unit: str, *, most: bool = True) -> None:
        met = None if value is None else (value <= limit if most else value >= limit)
        rows.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": met, "most": most})

    # per image: the requests that name one image (create, upload, read, members, …), listing and discovery apart
    add("(real) fresh copy: destination requests per image", am.get("dst_per_image"), 3.0, "requests")
    noop_ok = noop.get("images", 0) >= 1000
    add(
        "(real) no-op re-run of ≥ 1,000 images: destination requests",
        noop.get("dst_requests") if noop_ok else None,
        99,
        "requests",
    )
    # The listing target's value is the smallest page asked for.
    limits = [int(x) for x in (*am.get("listing_limits", []), *noop.get("listing_limits", [])) if x.isdigit()]
    add("(real) listing pages of 1,000 (smallest limit asked)", min(limits) if limits else None, 1000, "", most=False)
    return rows


def real_small_table(rs: dict[str, Any]) -> str:
    """Markdown: asyncmigrate against the minimal client on the real pair, and the no-op re-run."""
    if "skipped" in rs or "error" in rs:
        return f"Real Glance, many small images: {rs.get('skipped') or 'FAILED: ' + str(rs.get('error'))}"
    s = rs.get("summary", {})
    lines = [
        f"Real Glance pair, {rs['count']} images of {rs['size']} B per round (visibility "
        f"{rs.get('visibility', 'shared')}), concurrency {rs['concurrency']}, "
        f"{rs['rounds']} rounds per side alternating (A B A B …), fresh images each round; requests counted "
        "from the servers' access logs:",
        "",
        "| real Glance, small images | images/s | rounds | × minimal | dst requests: per image + per run "
        "| src requests: per image + per run | glance CPU ms/image | client CPU s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "asyncmigrate": "asyncmigrate copy, default flags",
        "minimal": "minimal client: list, then GET data → POST → PUT → GET",
    }
    mini = s.get("minimal", {}).get("images_s")
    for side, label in labels.items():
        v = s.get(side)
        if v is None:
            errors = [r.get("error") for r in rs.get("rounds_results", []) if r.get("side") == side]
            lines.append(f"| {label} | FAILED: {'; '.join(map(str, errors)) or 'not measured'} |||||||")
            continue
        busy = f" (other load up to {v['others_cores']:.1f} cores)" if v.get("others_cores", 0) > 0.25 else ""
        lines.append(
            f"| {label} | {v['images_s']:.1f} | {', '.join(f'{x:.1f}' for x in v['samples_images_s'])}{busy} "
            f"| {_fmt(_ratio(v['images_s'], mini), '.2f')} | {v['dst_per_image']:.2f} + {v['dst_per_run']} "
            f"| {v['src_per_image']:.2f} + {v['src_per_run']} "
            f"| {v['glance_cpu_per_image_ms']:.0f} | {v['client_cpu_s']:.1f} |"
        )
    noop = s.get("noop")
    if noop:
        lines.append(
            f"| no-op re-run of {noop['images']} images (asyncmigrate) | {noop['images'] / noop['seconds']:.0f} "
            f"| {noop['seconds']:.1f} s | | {noop['dst_requests']} in all | {noop['src_requests']} in all | | |"
        )
    elif rs.get("noop"):
        lines.append(f"| no-op re-run | FAILED: {rs['noop'].get('error')} |||||||")
    lines.append("")
    for side in ("asyncmigrate", "minimal"):
        if side in s:
            lines.append(
                f"- {side}, one round: destination {_kinds(s[side]['dst_kinds'])}; "
                f"source {_kinds(s[side]['src_kinds'])}"
            )
    if noop:
        lines.append(f"- no-op re-run: destination {_kinds(noop['dst_kinds'])}; source {_kinds(noop['src_kinds'])}")
    limits = sorted({lim for v in s.values() if isinstance(v, dict) for lim in v.get("listing_limits", [])})
    lines.append(
        f"- listing pages asked with limit = {', '.join(limits) or '–'}; seeding ran at "
        f"{rs.get('seed_images_s', 0):.1f} images/s (POST + PUT into the source, 8 threads)"
    )
    return "\n".join(lines)


def startup_table(st: dict[str, Any]) -> str:
    """Markdown: min and median wall and CPU time of ``--version`` and the help pages."""
    lines = [
        f"Start-up of `{st['command']}` (a fresh process each time, {st['repeats']} runs each, round-robin; "
        f"other processes used {st['others_cores']:.1f} cores meanwhile):",
        "",
        "| command | wall min ms | wall median ms | CPU min ms | CPU median ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in ("--version", "--help", "copy --help"):
        r = st[label]
        lines.append(
            f"| `asyncmigrate {label}` | {r['wall_min'] * 1000:.0f} | {r['wall_median'] * 1000:.0f} "
            f"| {r['cpu_min'] * 1000:.0f} | {r['cpu_median'] * 1000:.0f} |"
        )
    return "\n".join(lines)


def startup_line(st: dict[str, Any]) -> str:
    """One progress line for the runner's log."""
    parts = [f"{label} {st[label]['wall_median'] * 1000:.0f} ms" for label in ("--version", "--help", "copy --help")]
    return f"start-up (median wall of {st['repeats']}): {', '.join(parts)}; other load {st['others_cores']:.2f} cores"


def startup_targets(st: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``--version`` and ``--help`` under 0.3 s (the slowest median of the three commands)."""
    value = max(st[label]["wall_median"] for label in ("--version", "--help", "copy --help")) if st else None
    met = None if value is None else value <= 0.3
    name = "start-up: --version / --help / copy --help, median wall"
    return [{"target": name, "value": value, "limit": 0.3, "unit": "s", "met": met, "most": True}]


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def plot(path: Path, s: dict[str, Summary]) -> str | None:
    """Throughput and peak RSS against concurrency and image size; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    conc = [v for v in s.values() if v["key"].startswith("concurrency/") and "-" not in v["key"] and v.get("mib_s")]
    conc.sort(key=lambda v: v["x"])
    sizes = sorted((v for v in s.values() if v["group"] == "size" and v.get("mib_s")), key=lambda v: v["x"])
    single = [v for v in s.values() if v["group"] == "single" and v.get("mib_s")]
    uv8 = s.get("concurrency/8-uv", {})
    ax = axes[0][0]
    ax.plot([v["x"] for v in conc], [v["mib_s"] for v in conc], "o-", label="asyncmigrate (default flags)")
    if uv8.get("mib_s"):
        ax.plot([8], [uv8["mib_s"]], "s", label="uvloop+mallopt, c=8")
    ax.set(
        title="aggregate throughput vs concurrency",
        xlabel="concurrency",
        ylabel="MiB/s",
        xticks=[1, 2, 4, 8],
        ylim=(0, None),
    )
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.plot([v["x"] for v in conc], [v["peak_rss_mib"] for v in conc], "o-", label="peak RSS (VmHWM)")
    ax.plot([v["x"] for v in conc], [v["rss_before_mib"] for v in conc], "x--", label="RSS before transfer")
    if uv8.get("peak_rss_mib"):
        ax.plot([8], [uv8["peak_rss_mib"]], "s", label="uvloop+mallopt, c=8")
    ax.axhline(120 * MB / MiB, color="red", lw=0.8, ls=":", label="target 120 MB")
    ax.set(title="peak RSS vs concurrency", xlabel="concurrency", ylabel="MiB", xticks=[1, 2, 4, 8], ylim=(0, None))
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.semilogx([v["x"] / 2**20 for v in sizes], [v["mib_s"] for v in sizes], "o-")
    ax.set(
        title="throughput vs image size (verify=full)", xlabel="image size, MiB (log)", ylabel="MiB/s", ylim=(0, None)
    )
    ax = axes[1][1]
    ax.semilogx([v["x"] / 2**20 for v in sizes], [v["peak_rss_mib"] for v in sizes], "o-", label="peak RSS")
    if sizes:
        base = sizes[0]["peak_rss_mib"]
        ax.axhspan(base * 0.9, base * 1.1, color="green", alpha=0.1, label="±10 % of smallest")
    ax.set(title="peak RSS vs image size", xlabel="image size, MiB (log)", ylabel="MiB", ylim=(0, None))
    ax.legend(fontsize=8)
    ax = axes[0][2]
    names = [v["label"] for v in single]
    ax.barh(range(len(single)), [v["mib_s"] for v in single], color="tab:blue")
    ax.set_yticks(range(len(single)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set(title="one large image", xlabel="MiB/s")
    ax = axes[1][2]
    ax.barh(range(len(single)), [v["client_cpu_s_per_gib"] for v in single], color="tab:orange", label="client")
    ax.barh(
        range(len(single)),
        [v["server_cpu_s_per_gib"] for v in single],
        left=[v["client_cpu_s_per_gib"] for v in single],
        color="tab:gray",
        label="fake servers",
    )
    ax.set_yticks(range(len(single)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set(title="CPU seconds per GiB", xlabel="CPU s/GiB")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
