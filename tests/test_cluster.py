"""The cluster stage: dual embedding, weighted Ward, two-stage clustering, storage, routing, sweep."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from doubles import HashEmbedder
from scipy.cluster.hierarchy import is_valid_linkage, linkage
from sklearn.metrics import adjusted_rand_score

from unolearn import cluster
from unolearn.bench.cluster import bench_cluster, synthetic_vectors
from unolearn.cluster import (
    ClusterConfig,
    Router,
    cluster_vectors,
    dual_embedding,
    normalise,
    sweep,
)
from unolearn.errors import ConfigError, InputError, NotFoundError
from unolearn.records import Log, Message
from unolearn.store import now
from unolearn.ward import order_by_size, weighted_ward

TOPICS = {  # topic → (query words, feedback rules)
    "bread": ("how do i bake sourdough bread with rye flour", ["use a longer proof", "weigh flour in grams"]),
    "tax": ("how do i file income tax returns as freelancer", ["cite the tax code section", "mention deadlines"]),
    "run": ("plan my marathon training schedule for spring race", ["include rest days", "add tempo runs"]),
}


def add_log(ws, query: str, feedback_rules, prior_rules=None) -> str:
    """Store one log and its rules rows; return the log id."""
    log = Log.from_messages([Message(role="user", content=query), Message(role="assistant", content="answer"),
                             Message(role="user", content="not quite")])
    ws.add_logs([log])
    with ws.transaction() as c:
        if feedback_rules is not None:
            c.execute("INSERT INTO rules VALUES (?,?,?,?,?)",
                      (log.id, "feedback", json.dumps(feedback_rules), "m", now()))
        if prior_rules is not None:
            c.execute("INSERT INTO rules VALUES (?,?,?,?,?)",
                      (log.id, "prior", json.dumps(prior_rules), "m", now()))
    return log.id


def add_topics(ws, counts=(6, 5, 4)) -> dict[str, list[str]]:
    """Logs on each topic (query variants differ in one word); returns topic → log ids."""
    ids: dict[str, list[str]] = {}
    for (topic, (query, rules)), n in zip(TOPICS.items(), counts):
        ids[topic] = [add_log(ws, f"{query} variant{i}", rules + [f"note{i}"]) for i in range(n)]
    return ids


def stored(ws) -> tuple[list, list]:
    clusters = ws.conn.execute("SELECT id, size, centroid, embedder FROM clusters ORDER BY id").fetchall()
    members = ws.conn.execute("SELECT log_id, cluster FROM cluster_members ORDER BY log_id").fetchall()
    return clusters, members


CFG = ClusterConfig(threshold=1.5)


# -- pure functions ------------------------------------------------------------------------------


def test_dual_embedding_normalises_each_half_then_the_whole():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(5, 8)) * 3, rng.normal(size=(5, 4)) * 0.1
    r[2] = 0.0
    d = dual_embedding(q, r)
    assert d.shape == (5, 12) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-6)
    halves = np.linalg.norm(d[:, :8], axis=1), np.linalg.norm(d[:, 8:], axis=1)
    np.testing.assert_allclose(halves[0][[0, 1, 3, 4]], np.sqrt(0.5), rtol=1e-6)  # equal weight
    np.testing.assert_allclose(halves[1][[0, 1, 3, 4]], np.sqrt(0.5), rtol=1e-6)
    assert halves[1][2] == 0 and halves[0][2] == pytest.approx(1.0)  # a zero half stays zero


@pytest.mark.parametrize("n,dim,seed", [(2, 3, 0), (3, 2, 1), (40, 5, 2), (150, 16, 3)])
def test_weighted_ward_with_unit_weights_is_scipy_ward(n, dim, seed):
    x = np.random.default_rng(seed).normal(size=(n, dim))
    ours, theirs = weighted_ward(x, np.ones(n)), linkage(x, "ward")
    np.testing.assert_allclose(ours[:, 2], theirs[:, 2], rtol=1e-9)  # merge heights
    np.testing.assert_array_equal(ours[:, [0, 1, 3]], theirs[:, [0, 1, 3]])  # same tree
    assert is_valid_linkage(ours)


def test_weighted_ward_equals_ward_on_repeated_points():
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(25, 4)), rng.integers(1, 5, 25)
    ours = weighted_ward(x, w)
    theirs = linkage(np.repeat(x, w, axis=0), "ward")
    np.testing.assert_allclose(ours[:, 2], theirs[-24:, 2], rtol=1e-9)  # repeats merge at height 0 first
    assert is_valid_linkage(ours) and ours[-1, 3] == 25  # the count column counts leaves


def test_order_by_size_numbers_largest_first():
    labels = order_by_size(np.array([7, 3, 3, 9, 9, 9, 7, 5]))
    assert labels.tolist() == [1, 2, 2, 0, 0, 0, 1, 3]


def test_two_stage_agrees_with_exact_ward_on_separable_blobs():
    x, truth = synthetic_vectors(1500, 32, seed=1, blobs=12)
    exact, m1, *_ = cluster_vectors(x, ClusterConfig(threshold=3.0))
    two, m2, *_ = cluster_vectors(x, ClusterConfig(threshold=3.0, exact_max=100, micro_clusters=150))
    assert (m1, m2) == ("exact", "two-stage")
    assert exact.max() + 1 >= 8  # a meaningful number of clusters, not one or all
    assert adjusted_rand_score(exact, two) >= 0.9
    assert adjusted_rand_score(truth, two) >= 0.9


@pytest.mark.parametrize("bad", [dict(threshold=0), dict(exact_max=-1), dict(micro_clusters=1),
                                 dict(micro_clusters=10**6), dict(unseen_distance=3.0)])
def test_config_is_validated(bad):
    with pytest.raises(ConfigError):
        ClusterConfig(**bad)


# -- the stage -----------------------------------------------------------------------------------


def test_run_stores_clusters_by_topic(ws):
    ids = add_topics(ws)
    res = cluster.run(ws, HashEmbedder(), CFG)
    assert (res.n_logs, res.n_clusters, res.sizes, res.method) == (15, 3, [6, 5, 4], "exact")
    clusters, members = stored(ws)
    assert [(c[0], c[1], c[3]) for c in clusters] == [(0, 6, "hash"), (1, 5, "hash"), (2, 4, "hash")]
    by_log = dict(members)
    for cid, topic in enumerate(TOPICS):
        assert {by_log[i] for i in ids[topic]} == {cid}
    centroid = np.frombuffer(clusters[0][2], dtype=np.float32)
    assert centroid.shape == (64,)  # the *query* embedding's dimension, not the dual one
    assert np.linalg.norm(centroid) == pytest.approx(1.0, abs=1e-5)
    expected = normalise(HashEmbedder().embed([ws.get_log(i).query for i in ids["bread"]]).mean(0, keepdims=True))
    np.testing.assert_allclose(centroid, expected[0], atol=1e-6)
    status, result = ws.conn.execute("SELECT status, result FROM runs WHERE stage='cluster'").fetchone()
    assert status == "ok" and json.loads(result)["n_clusters"] == 3


def test_run_two_stage_when_over_exact_max(ws):
    add_topics(ws, counts=(8, 8, 8))
    res = cluster.run(ws, HashEmbedder(), ClusterConfig(threshold=1.5, exact_max=10, micro_clusters=9))
    assert res.method == "two-stage" and res.n_logs == 24 and res.sizes == [8, 8, 8]


def test_run_clusters_every_log_with_distilled_feedback_even_without_rules(ws):
    add_topics(ws, counts=(3, 3, 3))
    add_log(ws, "empty list", [])  # feedback that gave no rules: clustered, as in the reference
    add_log(ws, "blank rules", ["", "  "])
    add_log(ws, "prior only", None, prior_rules=["a prior rule"])  # no feedback distilled: not clustered
    res = cluster.run(ws, HashEmbedder(), CFG)
    assert res.n_logs == 11 and ws.count("cluster_members") == 11


def test_run_without_usable_feedback_is_an_input_error(ws):
    add_log(ws, "empty list", [])
    with pytest.raises(InputError, match="no logs with usable feedback"):
        cluster.run(ws, HashEmbedder(), CFG)
    assert ws.conn.execute("SELECT status FROM runs").fetchone()[0] == "failed"


def test_rerun_replaces_the_clustering_and_its_gaps(ws):
    add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    with ws.transaction() as c:
        c.execute("INSERT INTO gaps VALUES (0, 's', 0.5, 0.5, 0.5, 6, 'primary', 0.45)")
    res = cluster.run(ws, HashEmbedder(), ClusterConfig(threshold=0.01))  # every log alone
    assert res.n_clusters == 15 and ws.count("clusters") == 15 and ws.count("cluster_members") == 15
    assert ws.count("gaps") == 0


def test_failure_while_storing_keeps_the_previous_clustering(ws, monkeypatch):
    add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    before = stored(ws)

    def failing_rows(log_ids, labels):
        yield log_ids[0], int(labels[0])
        raise RuntimeError("disk full")

    monkeypatch.setattr(cluster, "_member_rows", failing_rows)
    with pytest.raises(RuntimeError, match="disk full"):
        cluster.run(ws, HashEmbedder(), ClusterConfig(threshold=0.01))
    assert stored(ws) == before
    assert [r[0] for r in ws.conn.execute("SELECT status FROM runs ORDER BY id")] == ["ok", "failed"]


def test_sweep_counts_fall_as_the_threshold_grows(ws):
    add_topics(ws)
    thresholds = [0.01, 0.5, 1.0, 1.5, 3.0, 100.0]
    rows = sweep(ws, HashEmbedder(), thresholds, ClusterConfig(auto_min_size=4))
    rows, auto = rows[:-1], rows[-1]
    assert auto["auto"].startswith("auto: best silhouette") and auto["n_clusters"] == 3
    assert all(r["silhouette"] is None for r in (rows[0], rows[-1]))  # 15 clusters of one, or one cluster
    counts = [r["n_clusters"] for r in rows]
    assert [r["threshold"] for r in rows] == thresholds
    assert counts == sorted(counts, reverse=True) and counts[0] == 15 and counts[-1] == 1
    assert all(sum(r["sizes"]) == 15 for r in rows)
    assert rows[3]["sizes"] == cluster.run(ws, HashEmbedder(), CFG).sizes
    assert ws.count("runs") == 1  # sweep stores nothing


def test_automatic_threshold_finds_the_topics_and_is_recorded(ws):
    add_topics(ws)
    result = cluster.run(ws, HashEmbedder(), ClusterConfig(auto_min_size=4))
    assert result.sizes == [6, 5, 4] and result.threshold_from.startswith("auto: best silhouette")
    recorded = json.loads(ws.conn.execute("SELECT result FROM runs WHERE stage = 'cluster'").fetchone()[0])
    assert recorded["threshold"] == result.threshold > 0 and recorded["threshold_from"] == result.threshold_from


def test_automatic_threshold_keeps_clusters_large_enough_to_train_on(ws):
    add_topics(ws, counts=(3, 2, 2))  # 7 logs: no cut into two clusters has a median cluster of 4
    result = cluster.run(ws, HashEmbedder(), ClusterConfig(auto_min_size=4))
    assert result.sizes == [7] and result.threshold_from.startswith("auto: one cluster")
    small = cluster.run(ws, HashEmbedder(), ClusterConfig(auto_min_size=2))
    assert small.sizes == [3, 2, 2]


def test_automatic_threshold_allows_a_cut_whose_median_cluster_is_large_enough(ws):
    add_topics(ws, counts=(4, 4, 3))  # 11 logs: three clusters [4, 4, 3] have a median of 4, though 3 × 4 > 11
    result = cluster.run(ws, HashEmbedder(), ClusterConfig(auto_min_size=4))
    assert result.sizes == [4, 4, 3] and result.threshold_from.startswith("auto: best silhouette")


def test_logs_whose_feedback_gave_no_rules_join_their_topic(ws):
    ids = add_topics(ws)
    quiet = add_log(ws, f"{TOPICS['bread'][0]} variant9", [])
    result = cluster.run(ws, HashEmbedder(), ClusterConfig(threshold=1.5))
    members = dict(stored(ws)[1])
    assert result.n_logs == 16 and members[quiet] == members[ids["bread"][0]]


def test_logs_without_rules_never_gather_into_a_cluster_of_their_own(ws):
    ids = add_topics(ws, counts=(5, 5, 5))
    quiet = {topic: add_log(ws, f"{TOPICS[topic][0]} variant9", []) for topic in ("bread", "tax", "run")}
    result = cluster.run(ws, HashEmbedder(), ClusterConfig(threshold=1.5))
    members = dict(stored(ws)[1])
    assert result.n_clusters == 3 and sorted(result.sizes) == [6, 6, 6]
    assert all(members[quiet[t]] == members[ids[t][0]] for t in quiet)  # each with its topic

    later = {topic: add_log(ws, f"{TOPICS[topic][0]} variant8", []) for topic in ("bread", "tax", "run")}
    step = cluster.run(ws, HashEmbedder(), ClusterConfig(threshold=1.5))  # incremental: they join, none is unfit
    members = dict(stored(ws)[1])
    assert step.mode == "incremental" and step.unfit == 0 and step.n_clusters == 3
    assert all(members[later[t]] == members[ids[t][0]] for t in later)


# -- routing -------------------------------------------------------------------------------------


def test_router_routes_to_the_topic_cluster_and_flags_unseen(ws):
    add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    router = Router.load(ws, HashEmbedder())
    cid, dist = router.route("how do i file income tax returns as freelancer this year")
    assert cid == 1 and 0 <= dist < 0.5
    assert router.route("completely unrelated words about quantum chromodynamics")[0] is not None
    strict = Router.load(ws, HashEmbedder(), unseen_distance=0.5)
    unseen, far = strict.route("completely unrelated words about quantum chromodynamics")
    assert unseen is None and far > 0.5
    assert [c for c, _ in strict.route_many(["plan my marathon training schedule", "zzz qqq"])] == [2, None]
    cluster.run(ws, HashEmbedder(), dataclasses.replace(CFG, unseen_distance=0.5))
    assert Router.load(ws, HashEmbedder()).unseen_distance == 0.5  # as clustered, unless given
    assert Router.load(ws, HashEmbedder(), unseen_distance=None).unseen_distance is None


def test_router_add_moves_the_centroid_and_counts_the_log(ws):
    add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    router = Router.load(ws, HashEmbedder())
    old = router.centroids[2].copy()
    query = "plan my marathon training schedule for autumn race"
    new_id = add_log(ws, query, None)
    cid, _ = router.add(new_id, query)
    assert cid == 2
    size, blob = ws.conn.execute("SELECT size, centroid FROM clusters WHERE id = 2").fetchone()
    centroid = np.frombuffer(blob, dtype=np.float32)
    expected = normalise((old * 4 + HashEmbedder().embed([query])[0])[None, :] / 5)[0]
    assert size == 5 and not np.allclose(centroid, old)
    np.testing.assert_allclose(centroid, expected, atol=1e-6)
    assert ws.conn.execute("SELECT cluster FROM cluster_members WHERE log_id = ?", (new_id,)).fetchone() == (2,)
    assert router.add(new_id, query)[0] == 2  # adding again changes nothing
    assert ws.conn.execute("SELECT size FROM clusters WHERE id = 2").fetchone() == (5,)
    np.testing.assert_allclose(Router.load(ws, HashEmbedder()).centroids[2], centroid)
    with pytest.raises(NotFoundError):
        router.add("no-such-log", query)


def test_router_needs_a_clustering_from_the_same_embedder(ws):
    with pytest.raises(NotFoundError, match="unolearn cluster"):
        Router.load(ws, HashEmbedder())
    add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    other = HashEmbedder()
    other.model_id = "other"
    with pytest.raises(ConfigError, match="embedder"):
        Router.load(ws, other)


# -- benchmark -----------------------------------------------------------------------------------


def test_bench_cluster_small_run_reports_its_figures():
    out = bench_cluster(n=800, dim=16)
    assert {"n", "seconds", "peak_mb", "ari", "n_clusters", "threshold"} <= set(out)
    assert out["n"] == 800 and out["seconds"] > 0 and out["peak_mb"] > 10
    assert -1 <= out["ari"] <= 1 and out["n_clusters"] >= 1


# -- incremental clustering ----------------------------------------------------------------------


def test_new_logs_join_their_topic_and_a_new_topic_gets_new_ids(ws):
    ids = add_topics(ws)
    first = cluster.run(ws, HashEmbedder(), CFG)
    v1 = ws.clustering()
    before, _ = stored(ws)
    bread = [add_log(ws, f"{TOPICS['bread'][0]} variant{i}", TOPICS["bread"][1]) for i in (7, 8)]
    garden = [add_log(ws, f"when should i prune apple trees in my garden variant{i}", ["name the month"])
              for i in range(3)]
    res = cluster.run(ws, HashEmbedder(), CFG)  # incremental by default: the settings are the same
    v2 = ws.clustering()
    assert (first.mode, res.mode, v2.mode) == ("full", "incremental", "incremental") and v2.id > v1.id
    by_log = ws.member_map()
    assert {by_log[i] for i in ids["bread"] + bread} == {0}  # old and new bread logs: still cluster 0
    assert {by_log[i] for i in ids["tax"]} == {1} and {by_log[i] for i in ids["run"]} == {2}
    assert {by_log[i] for i in garden} == {3}  # fitted no cluster: a new id after the old ones
    assert (res.added, res.unfit, res.changed, res.sizes) == (5, 3, [0, 3], [8, 5, 4, 3])
    assert res.drift == pytest.approx(3 / 5) and v2.drift == pytest.approx(3 / 5) and v2.threshold == v1.threshold
    after, _ = stored(ws)
    assert after[1:3] == before[1:3]  # unchanged clusters: same id, size and centroid
    assert after[0][2] != before[0][2]  # bread's centroid moved with its new logs
    spread = ws.cluster_spread()
    assert spread[0][1] == [v1.id, v2.id] and spread[1][1] == [v1.id] and spread[3][1] == [v2.id]
    assert all(radius >= 0 for radius, _ in spread.values())


def test_nothing_new_changes_nothing_and_recluster_rebuilds(ws):
    add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    v1 = ws.clustering()
    res = cluster.run(ws, HashEmbedder(), CFG)
    assert res.mode == "unchanged" and ws.clustering() == v1
    add_log(ws, "when should i prune apple trees in my garden", ["name the month"])
    res = cluster.run(ws, HashEmbedder(), dataclasses.replace(CFG, recluster=True))
    assert res.mode == "full" and ws.clustering().mode == "full" and ws.clustering().drift == 0.0
    assert res.changed == list(range(res.n_clusters))


def test_the_clustering_is_rebuilt_once_the_logs_have_doubled(ws):
    add_topics(ws, counts=(2, 2, 2))  # 6 logs
    assert cluster.run(ws, HashEmbedder(), CFG).mode == "full"
    more = [add_log(ws, f"{TOPICS['tax'][0]} variant{i}", TOPICS["tax"][1]) for i in (5, 6, 7)]
    assert cluster.run(ws, HashEmbedder(), CFG).mode == "incremental"  # 3 added < 6
    more += [add_log(ws, f"{TOPICS['run'][0]} variant{i}", TOPICS["run"][1]) for i in (5, 6, 7)]
    never = dataclasses.replace(CFG, rebuild_growth=None)
    assert cluster.run(ws, HashEmbedder(), never).mode == "incremental"  # 6 added, but growth is off
    more.append(add_log(ws, f"{TOPICS['bread'][0]} variant9", TOPICS["bread"][1]))
    res = cluster.run(ws, HashEmbedder(), CFG)  # 7 added since the rebuild of 6 logs
    assert res.mode == "full" and ws.clustering().added == 0 and res.n_logs == 13


def test_a_new_threshold_or_embedder_rebuilds(ws):
    add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    add_log(ws, "when should i prune apple trees in my garden", ["name the month"])
    assert cluster.run(ws, HashEmbedder(), ClusterConfig(threshold=0.01)).mode == "full"
    add_log(ws, "which apple variety for a small garden", ["name the variety"])
    other = HashEmbedder()
    other.model_id = "another-embedder"
    assert cluster.run(ws, other, ClusterConfig(threshold=0.01)).mode == "full"


def test_a_log_whose_rules_were_withdrawn_leaves_its_cluster(ws):
    ids = add_topics(ws)
    cluster.run(ws, HashEmbedder(), CFG)
    with ws.transaction() as c:
        c.execute("DELETE FROM rules WHERE log_id = ?", (ids["tax"][0],))
    res = cluster.run(ws, HashEmbedder(), CFG)
    assert res.mode == "incremental" and res.changed == [1] and res.sizes == [6, 4, 4]
    assert ids["tax"][0] not in ws.member_map()
