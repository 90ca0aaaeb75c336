"""Views of the analysis: per-cluster summaries (for `clusters list`) and a static HTML report.

The report is one self-contained HTML file in the workspace's artifacts (inline SVG, no scripts,
no network), so it opens from disk in any browser and can be attached to a ticket.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Embedder
from .funnel import funnel_lines
from .store import Workspace, now, write_lines_atomic

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def cluster_summaries(ws: Workspace, examples: int = 3) -> list[dict[str, Any]]:
    """Every cluster with its size, example queries, most frequent rules, gap, plan, and the clustering
    versions that made or changed it (``rounds``)."""
    gaps, spread = ws.gaps(), ws.cluster_spread()
    out = []
    for cid, size, _, _ in ws.cluster_rows():
        members = ws.cluster_logs(cid)
        queries = [log.query for _, log, _ in members]
        rules = Counter(r for _, _, fb in members for r in fb)
        g = gaps.get(cid, {})
        gap, gap_mean, gap_max, scorer, plan = (g.get(k) for k in ("gap", "gap_mean", "gap_max", "scorer", "plan"))
        out.append({"cluster": cid, "size": size, "top_queries": queries[:examples],
                    "top_rules": [r for r, _ in rules.most_common(examples)], "gap": gap,
                    "gap_mean": gap_mean, "gap_max": gap_max, "scorer": scorer, "plan": plan,
                    "rounds": spread.get(cid, (None, []))[1]})
    return out


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components (zeros when there is < 2 rows)."""
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pts = centred @ vt[:2].T
    return pts if pts.shape[1] == 2 else np.pad(pts, ((0, 0), (0, 2 - pts.shape[1])))


def _map_svg(points: np.ndarray, labels: list[int], titles: list[str], size: int = 520) -> str:
    if len(points) == 0:
        return "<p>No clustered logs.</p>"
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi - lo == 0, 1.0, hi - lo)
    xy = 20 + (points - lo) / span * (size - 40)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="4" fill="{PALETTE[c % len(PALETTE)]}" fill-opacity="0.75">'
        f"<title>cluster {c}: {html.escape(t[:120])}</title></circle>"
        for (x, y), c, t in zip(xy, labels, titles))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'style="border:1px solid #ccc;background:#fff">{dots}</svg>')


def _cluster_rows(summaries: list[dict[str, Any]]) -> str:
    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    def items(xs: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{html.escape(x[:200])}</li>" for x in xs) + "</ul>"

    return "".join(
        f'<tr><td><span class="sw" style="background:{PALETTE[s["cluster"] % len(PALETTE)]}"></span>'
        f'{s["cluster"]}</td><td>{s["size"]}</td><td>{fmt(s["gap"])}</td><td>{fmt(s["gap_mean"])}</td>'
        f'<td>{fmt(s["gap_max"])}</td><td>{html.escape(s["plan"] or "not assessed")}</td>'
        f'<td>{", ".join(map(str, s["rounds"])) or "–"}</td>'
        f'<td>{items(s["top_queries"])}</td><td>{items(s["top_rules"])}</td></tr>' for s in summaries)


STYLE = """body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ddd;padding:6px;vertical-align:top;font-size:14px}th{background:#f4f4f4}
ul{margin:0;padding-left:1.2em}.sw{display:inline-block;width:12px;height:12px;margin-right:6px;
border-radius:2px}table.counts{width:auto}.counts td{border:none;padding:2px 12px 2px 0}"""


def _bars_svg(values: dict[str, float | None], width: int = 420) -> str:
    """Horizontal bars of a 0–1 value per system."""
    rows = "".join(
        f'<text x="0" y="{18 * i + 13}" font-size="12">{html.escape(name)}</text>'
        f'<rect x="90" y="{18 * i + 3}" width="{(v or 0) * (width - 150):.1f}" height="12" '
        f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{95 + (v or 0) * (width - 150):.1f}" y="{18 * i + 13}" '
        f'font-size="11">{"–" if v is None else f"{100 * v:.1f}%"}</text>'
        for i, (name, v) in enumerate(values.items()))
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{18 * len(values) + 6}">{rows}</svg>'


def quality_section(result: dict[str, Any]) -> str:
    """The benchmark's compliance per system, one bar chart per dataset, plus a table of all figures."""
    systems = result["systems"]
    datasets = sorted({d for s in systems.values() for d in s["per_dataset"]})
    charts = "".join(
        f"<h3>{html.escape(d)}</h3>" + _bars_svg({n: s["per_dataset"].get(d, {}).get("compliance")
                                                  for n, s in systems.items()}) for d in datasets)
    head = ("<tr><th>system</th><th>compliance</th><th>− base, 95% CI</th><th>ROUGE-L</th><th>checklist</th>"
            "<th>prompt tokens</th><th>latency s</th></tr>")
    body = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{s['compliance']}</td><td>{_ci_cell(s.get('compliance_ci_vs_base'))}</td>"
        f"<td>{s.get('rouge_l', '–')}</td><td>{s.get('checklist', '–')}</td><td>{s['prompt_tokens']}</td>"
        f"<td>{s['latency_s']}</td></tr>" for n, s in systems.items())
    funnel = "".join(f"<pre>{html.escape(line)}</pre>" for line in funnel_lines(result["funnel"])) \
        if "funnel" in result else ""
    return (f"<h2>Benchmark: constraint compliance</h2><p>{result['n_prompts']} test prompts, "
            f"{result.get('n_checks', '–')} (prompt, hidden constraint) checks; compliance is the share "
            f"satisfied; the interval is a paired bootstrap over test prompts (bold: excludes 0).</p>"
            f"{charts}<table>{head}{body}</table><h3>Learning funnel</h3>{funnel}")


def _ci_cell(ci: list[float] | None) -> str:
    """A compliance-difference interval, bold when it excludes 0."""
    if not ci:
        return "–"
    text = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
    return f"<b>{text}</b>" if ci[0] > 0 or ci[1] < 0 else text


def write_report(ws: Workspace, embedder: Embedder, path: Path | None = None) -> Path:
    """Write the analysis report (cluster map, clusters, noise filter) and return its path."""
    summaries = cluster_summaries(ws)
    members = ws.cluster_logs()
    queries = [log.query for _, log, _ in members]
    points = pca_2d(embedder.embed(queries)) if queries else np.zeros((0, 2))
    stats = ws.log_stats()
    d = stats["distilled"]
    counts = [("logs", stats["logs"]), ("logs with feedback", stats["with_feedback"]),
              ("feedback distilled", d["feedback_rules"]), ("usable feedback", d["usable_feedback"]),
              ("filtered as noise", d["filtered_as_noise"]), ("preference pairs", sum(d["pairs"].values())),
              ("clusters", len(summaries))]
    body = (f"<h1>unolearn report</h1><p>Workspace <code>{html.escape(str(ws.root))}</code>, {now()}.</p>"
            "<h2>Noise filter</h2><table class='counts'>"
            + "".join(f"<tr><td>{k}</td><td><b>{v}</b></td></tr>" for k, v in counts) + "</table>"
            "<h2>Cluster map</h2><p>Query embeddings of the clustered logs, first two principal "
            "components; colour = cluster.</p>" + _map_svg(points, [c for c, _, _ in members], queries)
            + "<h2>Clusters</h2><table><tr><th>cluster</th><th>size</th><th>gap</th><th>mean</th>"
            "<th>max</th><th>plan</th><th>changed in clustering</th><th>queries</th><th>top rules</th></tr>"
            + _cluster_rows(summaries) + "</table>")
    bench = ws.artifacts / "bench_quality.json"
    if bench.exists():
        body += quality_section(json.loads(bench.read_text(encoding="utf-8")))
    path = path or ws.artifacts / "report.html"
    write_lines_atomic(path, [f"<!doctype html><html><head><meta charset='utf-8'><title>unolearn report</title>"
                              f"<style>{STYLE}</style></head><body>{body}</body></html>"])
    return path
