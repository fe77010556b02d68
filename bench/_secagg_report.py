"""bench/secagg.py's Markdown: the recorded cells' tables and the verdicts."""

from __future__ import annotations

from typing import Any

TARGET = 5.0  # Flower's round / fedlake's round, at least
BONAWITZ = {"users": 2**10, "length": 2**20, "bits": 16, "expansion": 1.73}
REPEAT_S, REPEAT_MAX = 2.0, 5  # fedlake: rounds until 2 s of them or 5, the median reported


def _b(x: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.0f} B"


def _s(x: float) -> str:
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1e3:.3g} ms"


def render(data: dict[str, Any]) -> str:
    """The recorded cells as Markdown."""
    env = data["environment"]
    flower: dict[str, Any] = next(
        (c["flower"] for c in data["cells"] if "flwr" in c.get("flower", {})), {}
    )
    lines = [
        f"{env['cpus']} CPUs, {env['platform']}, {env['mem_total_GB']} GB; load average at "
        f"start {', '.join(f'{x:.1f}' for x in env['load_avg_at_start'])}; "
        f"numpy {env['numpy']}, cryptography {env['cryptography']}"
        + (f"; Flower {flower['flwr']} (Ray {flower['ray']})" if flower else "")
        + f"; {data['date']}. Each cell a fresh process (fedlake: the median of up to "
        f"{REPEAT_MAX} rounds; Flower: one round after Ray's start-up); k, t from "
        f"choose_parameters (design dropout {data['settings']['design_dropout']:g}, corrupt "
        f"rate {data['settings']['corrupt']:g}) or the complete graph.",
        "",
        "| n | d | dropout | graph | fedlake client / client | server | round "
        "| up / client | down / client | expansion | Flower round | Flower / fedlake |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in data["cells"]:
        f, w = c["fedlake"], c.get("flower", {})
        head = f"| {c['n']:,} | {c['length']:,} | {c['dropout']:.0%} | {_graph(c)} |"
        if "error" in f:
            ours = f" {f['error']} ||||||"
        else:
            ours = (
                f" {_s(f['client_s_per_client'])} | {_s(f['server_s'])} | "
                f"{_s(f['round_s'])} | {_b(f['up_per_client'])} | "
                f"{_b(f['down_per_client'])} | {f['expansion']:.2f}x |"
            )
        if not w:
            theirs = " not run | |"
        elif "error" in w:
            bound = _lower_bound(c, data)
            theirs = f" {w['error']} | " + (f"> {bound:.0f}x |" if bound else "|")
        else:
            ratio = w["round_s"] / f["round_s"] if "round_s" in f else float("nan")
            theirs = f" {_s(w['round_s'])} | {ratio:.1f}x |"
        lines.append(head + ours + theirs)
    details = [c for c in data["cells"] if c.get("flower") and "round_s" in c["flower"]]
    if details:
        lines += [
            "",
            "Flower's side (its simulation engine; bytes: its messages' serialized objects):",
            "",
            "| n | d | dropout | graph | client / client | server (not waiting) "
            "| up / client | down / client | expansion | survivors | Ray start-up "
            "| no-op stage | max error |",
            "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in details:
            w = c["flower"]
            lines.append(
                f"| {c['n']:,} | {c['length']:,} | {c['dropout']:.0%} | {_graph(c)} "
                f"| {_s(w['client_s_per_client'])} | {_s(w['server_s'])} "
                f"| {_b(w['up_per_client'])} | {_b(w['down_per_client'])} "
                f"| {w['expansion']:.2f}x | {w['survivors']} | {_s(w['ready_s'])} "
                f"| {_s(w['noop_round_s']) if 'noop_round_s' in w else '-'} "
                f"| {w['max_abs_error']:.2g} |"
            )
    params = {(c["n"], c["graph"], c["k"], c["t"]): c for c in data["cells"]}
    lines += [
        "",
        "Parameters: "
        + "; ".join(
            f"n {n:,} {_graph(c)}: abort bound {c['abort_bound']:.2g}"
            + (f" (2^-{c['failure_bits']} asked)" if "failure_bits" in c else "")
            for (n, _, _, _), c in sorted(params.items())
        ),
    ]
    lines += ["", *verdicts(data)]
    return "\n".join(lines)


def _graph(c: dict[str, Any]) -> str:
    """The cell's graph and its k, t (SecAgg+'s choice may be the complete graph)."""
    name = c["graph"] + (" (complete)" if c["graph"] != "complete" and c["k"] == c["n"] - 1 else "")
    return f"{name} k {c['k']}, t {c['t']}"


def _lower_bound(c: dict[str, Any], data: dict[str, Any]) -> float | None:
    """Flower's timeout / fedlake's round for a cell Flower ran past the timeout in."""
    w, f = c.get("flower", {}), c["fedlake"]
    if w.get("kind") != "timeout" or "round_s" not in f:
        return None
    return float(data["settings"]["timeout_s"]) / float(f["round_s"])


def verdicts(data: dict[str, Any]) -> list[str]:
    """The target and the checks, judged on the recorded cells."""
    out = []
    ratios = [
        (c, c["flower"]["round_s"] / c["fedlake"]["round_s"])
        for c in data["cells"]
        if "round_s" in c["fedlake"]
        and "round_s" in c.get("flower", {})
        and "error" not in c["flower"]
    ]
    if ratios:
        low = min(ratios, key=lambda cr: cr[1])
        passed = sum(r >= TARGET for _, r in ratios)
        out.append(
            f"- Flower's round / fedlake's round >= {TARGET:g}x in {passed} of {len(ratios)} "
            f"cells both finished; lowest {low[1]:.1f}x (n {low[0]['n']:,}, d "
            f"{low[0]['length']:,}, dropout {low[0]['dropout']:.0%}, {low[0]['graph']}): "
            + ("PASS" if passed == len(ratios) else "FAIL")
        )
    bounds = [(c, b) for c in data["cells"] if (b := _lower_bound(c, data)) is not None]
    if bounds:
        out.append(
            f"- cells where Flower ran past the timeout: {len(bounds)}, its round / fedlake's "
            f"> {min(b for _, b in bounds):.0f}x in all (timeout / fedlake's round)"
        )
    unfinished = [c for c in data["cells"] if "error" in c.get("flower", {})]
    for c in unfinished:
        if "round_s" in c["fedlake"]:
            out.append(
                f"- Flower at n {c['n']:,}, d {c['length']:,}, dropout {c['dropout']:.0%} "
                f"({c['graph']}): {c['flower']['error']} (fedlake: {_s(c['fedlake']['round_s'])})"
            )
    wrong = [c for c in data["cells"] if c["fedlake"].get("correct") is False]
    checked = [c for c in data["cells"] if "correct" in c["fedlake"]]
    out.append(
        f"- fedlake's decoded mean within its error bound in {len(checked) - len(wrong)} of "
        f"{len(checked)} cells" + (": FAIL" if wrong else "")
    )
    near = [c for c in checked if c["n"] == 1000 and c["length"] == 10**6]
    for c in near:
        out.append(
            f"- expansion at n 1,000, d 10^6, dropout {c['dropout']:.0%} ({c['graph']} k "
            f"{c['k']}): {c['fedlake']['expansion']:.3f}x of 32-bit plaintext (Bonawitz et al.: "
            f"{BONAWITZ['expansion']}x for 2^10 users, 2^20 16-bit values, complete graph)"
        )
    return out


# -- main ------------------------------------------------------------------------------------
