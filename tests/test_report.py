import re

import numpy as np
from doubles import HashEmbedder
from test_assess import add_clustered

from unolearn.assess import run as assess
from unolearn.backends import Models
from unolearn.report import cluster_summaries, pca_2d, write_report


def filled(ws):
    for i in range(3):
        add_clustered(ws, 0, f"short question {i}", ["keep the answer short"], ["keep the answer short"])
        add_clustered(ws, 1, f"law <question> {i}", ["quote article 12"], ["explain simply"])
    with ws.transaction() as c:
        c.execute("UPDATE clusters SET size = 3")
    assess(ws, Models(ws, embedder=HashEmbedder(dim=256)))


def test_cluster_summaries(ws):
    filled(ws)
    s0, s1 = cluster_summaries(ws)
    assert s0["size"] == 3 and s0["plan"] == "primary" and s0["top_rules"] == ["keep the answer short"]
    assert len(s0["top_queries"]) == 3 and s1["plan"] == "reflective" and s1["gap"] > s0["gap"]


def test_pca_2d_shapes():
    assert pca_2d(np.eye(5, 8)).shape == (5, 2)
    assert pca_2d(np.ones((1, 8))).shape == (1, 2)


def test_report_is_self_contained_html(ws):
    filled(ws)
    path = write_report(ws, HashEmbedder(dim=256))
    text = path.read_text()
    assert path == ws.artifacts / "report.html"
    assert text.count("<circle") == 6 and "reflective" in text and "primary" in text
    assert "&lt;question&gt;" in text and "<question>" not in text  # escaped
    assert not re.search(r"<script|https?://(?!www\.w3\.org)", text)


def test_cli_clusters_list_and_report(ws, run_cli):
    filled(ws)
    r = run_cli("clusters", "list", "--json")
    assert r.code == 0, r.err
    assert [c["plan"] for c in r.json()] == ["primary", "reflective"]
    assert "gap" in run_cli("clusters", "list").out
