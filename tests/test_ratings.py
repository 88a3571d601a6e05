"""Blinded rating tasks, the append-only ratings files, and agreement with scorers and between raters."""

import json
import multiprocessing

import numpy as np
import pandas as pd
import pytest

from interpflow.browser.agreement import agreement, agreement_records, krippendorff_alpha, write_agreement
from interpflow.browser.ratings import (
    RatingPool,
    append_line,
    human_accuracy,
    read_ratings,
    read_records,
    record_rating,
)

UNIT = "wiki/tiny/resid_post.1/sae/default"
EXPLAINERS = {"qwen": "llm", "random": "random"}


def _entries() -> pd.DataFrame:
    rows = []
    for latent, explanation in [(3, "the digit three"), (7, "words about cats")]:
        for explainer, kind in EXPLAINERS.items():
            rows.append(dict(unit=UNIT, shard=0, latent=latent, explainer=explainer, explainer_kind=kind,
                             status="ok", explanation=f"{explanation}, variant {len(rows)}",
                             **{"score.detection": 0.9}))  # fmt: skip
    # not rateable: a failed explanation, and an ok row without text
    for explainer, status in [("qwen", "parse_error"), ("random", "ok")]:
        rows.append(dict(unit=UNIT, shard=0, latent=9, explainer=explainer,
                         explainer_kind=EXPLAINERS[explainer], status=status, explanation=None,
                         **{"score.detection": np.nan}))  # fmt: skip
    return pd.DataFrame(rows)


def _examples() -> pd.DataFrame:
    """Latent 3: 7 activating and 6 non-activating test windows (plus train); latent 7: 2 activating only."""
    rows = []
    layout = {
        3: [("test", True)] * 7 + [("test", False)] * 6 + [("train", True)] * 4,
        7: [("test", True)] * 2,
    }
    for latent, windows in layout.items():
        for example_id, (split, activating) in enumerate(windows):
            rows.append(dict(latent=latent, example_id=example_id, split=split, activating=activating,
                             negative="" if activating else "random", token_strs=[f"w{example_id}", " x"],
                             acts=[1.0 if activating else 0.0, 0.0]))  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    (root / "browser/units" / UNIT / "shard-0").mkdir(parents=True)
    _entries().to_parquet(root / "browser/units" / UNIT / "shard-0/entries.parquet")
    (root / UNIT / "examples").mkdir(parents=True)
    _examples().to_parquet(root / UNIT / "examples/shard-0.parquet")
    return root


def _pool(results, entries=None) -> RatingPool:
    return RatingPool(_entries() if entries is None else entries, results)


def _truthful(pool, task, flip=()) -> dict:
    """Answers equal to the truth, except for the example ids in `flip`."""
    return {w.window: w.activating != (w.example_id in flip) for w in pool.windows(task)}


def test_pool_items_exclude_failed_and_empty_explanations(results):
    pool = _pool(results)
    assert sorted((i.latent, i.explainer) for i in pool.items) == [(3, "qwen"), (3, "random"), (7, "qwen"),
                                                                   (7, "random")]  # fmt: skip


def test_items_whose_examples_shard_is_missing_are_passed_over(results, tmp_path):
    other = dict(unit="wiki/tiny/resid_post.2/sae/default", shard=0, latent=1, explainer="qwen",
                 explainer_kind="llm", status="ok", explanation="commas")  # fmt: skip
    pool = _pool(results, pd.concat([_entries(), pd.DataFrame([other])], ignore_index=True))
    assert len(pool) == 5
    assert pool.windows(pool.task_of(other["unit"], 1, "qwen")) == []
    assert pool.item(pool.next_task("ann", tmp_path)["task"]).unit == UNIT


def test_tasks_are_blinded_and_mix_test_windows(results, tmp_path):
    pool, ratings_dir = _pool(results), tmp_path / "ratings"
    latents = []
    while (task := pool.next_task("ann", ratings_dir)) is not None:
        assert set(task) == {"task", "explanation", "windows"}
        assert all(set(w) == {"window", "token_strs"} for w in task["windows"])
        text = json.dumps(task)
        for leak in ["qwen", "random", "score", "acts", "activating", "llm", "latent", "example", UNIT]:
            assert leak not in text
        item = pool.item(task["task"])
        truth = {w.window: w for w in pool.windows(task["task"])}
        assert [w["window"] for w in task["windows"]] != list(truth) or item.latent == 7
        assert {w["window"] for w in task["windows"]} == set(truth)
        if (
            item.latent == 3
        ):  # capped at 5 + 5 of the 7 + 6 test windows; train windows (ids 13-16) never shown
            assert sorted(w.activating for w in truth.values()) == [False] * 5 + [True] * 5
            assert all(w.example_id < 13 for w in truth.values())
            shown = [truth[w["window"]].activating for w in task["windows"]]
            assert shown != sorted(shown)  # shuffled, not grouped by class
        latents.append(item.latent)
        record_rating(ratings_dir, "ann", task["task"], _truthful(pool, task["task"]), 3, pool)
    assert sorted(latents) == [3, 3, 7, 7]


def test_restart_maps_task_and_window_ids_identically(results, tmp_path):
    before = _pool(results)
    reordered = _entries().sample(frac=1.0, random_state=1).reset_index(drop=True)
    after = _pool(results, reordered)
    for item in before.items:
        assert after.task_of(item.unit, item.latent, item.explainer) == item.task
        assert after.windows(item.task) == before.windows(item.task)
    assert after.next_task("ann", tmp_path / "r") == before.next_task("ann", tmp_path / "r")


def test_raters_start_on_the_same_items_with_their_own_window_order(results, tmp_path):
    pool = _pool(results)
    ann, bob = pool.next_task("ann", tmp_path), pool.next_task("bob", tmp_path)
    assert ann["task"] == bob["task"]  # overlap early, for agreement between raters
    assert sorted(w["window"] for w in ann["windows"]) == sorted(w["window"] for w in bob["windows"])


def test_human_accuracy_is_balanced_where_both_classes_were_shown():
    # 3 activating answered yes, yes, no: TPR 2/3; 2 non-activating answered no, yes: TNR 1/2
    # balanced accuracy (2/3 + 1/2) / 2 = 7/12, where plain accuracy would be 3/5
    answers = [dict(activating=t, answer=a) for t, a in
               [(True, True), (True, True), (True, False), (False, False), (False, True)]]  # fmt: skip
    assert human_accuracy(answers) == (pytest.approx(7 / 12), "balanced_accuracy")
    only_activating = [dict(activating=True, answer=a) for a in (True, True, True, False)]
    assert human_accuracy(only_activating) == (0.75, "accuracy")


def test_record_rating_line_and_later_rating_supersedes(results, tmp_path):
    pool, ratings_dir = _pool(results), tmp_path / "ratings"
    task = pool.task_of(UNIT, 3, "random")
    windows = pool.windows(task)
    flip = [w.example_id for w in windows if w.activating][:1]  # one activating window called "no"
    record_rating(ratings_dir, "ann", task, _truthful(pool, task, flip), 2, pool)
    line = json.loads((ratings_dir / "ann.jsonl").read_text())
    assert (line["unit"], line["latent"], line["explainer"], line["rating"]) == (UNIT, 3, "random", 2)
    assert (line["n_windows"], line["n_correct"]) == (10, 9)
    assert {a["example_id"]: a["activating"] for a in line["answers"]} == {w.example_id: w.activating
                                                                           for w in windows}  # fmt: skip

    record_rating(ratings_dir, "ann", task, _truthful(pool, task), 5, pool)
    assert len((ratings_dir / "ann.jsonl").read_text().splitlines()) == 2  # append-only
    table = read_ratings(ratings_dir)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.rating, row.n_versions, row.n_correct, row.human_accuracy) == (5, 2, 10, 1.0)
    # TPR 4/5, TNR 1 for the first rating: balanced accuracy 0.9, kept on disk though superseded
    assert human_accuracy(line["answers"]) == (pytest.approx(0.9), "balanced_accuracy")


def test_rater_runs_out_of_tasks(results, tmp_path):
    pool, ratings_dir = _pool(results), tmp_path / "ratings"
    seen = []
    while (task := pool.next_task("ann", ratings_dir)) is not None:
        seen.append(task["task"])
        record_rating(ratings_dir, "ann", task["task"], _truthful(pool, task["task"]), 3, pool)
    assert sorted(seen) == sorted(i.task for i in pool.items)
    assert pool.next_task("bob", ratings_dir)["task"] == seen[0]


@pytest.mark.parametrize(
    ("field", "rater", "task", "rating", "answers"),
    [("rater", "", None, 3, None), ("rater", "a/b", None, 3, None), ("rater", "x" * 65, None, 3, None),
     ("rating", "ann", None, 0, None), ("rating", "ann", None, 6, None), ("rating", "ann", None, True, None),
     ("rating", "ann", None, 3.0, None), ("rating", "ann", None, "3", None),
     ("task", "ann", "nope", 3, None), ("answers", "ann", None, 3, "unknown"),
     ("answers", "ann", None, 3, "missing"), ("answers", "ann", None, 3, "not-bool")],
)  # fmt: skip
def test_invalid_rating_raises_naming_the_field(results, tmp_path, field, rater, task, rating, answers):
    pool = _pool(results)
    task = task or pool.task_of(UNIT, 3, "qwen")
    good = _truthful(pool, pool.task_of(UNIT, 3, "qwen"))
    first = next(iter(good))
    answers = {"unknown": good | {"deadbeef": True}, "missing": {k: v for k, v in good.items() if k != first},
               "not-bool": good | {first: 1}}.get(answers, good)  # fmt: skip
    with pytest.raises(ValueError, match=field) as error:
        record_rating(tmp_path / "ratings", rater, task, answers, rating, pool)
    if field == "task":
        assert "nope" in str(error.value)
    if answers is not good and "deadbeef" in answers:
        assert "deadbeef" in str(error.value)
    assert not (tmp_path / "ratings").exists()


def _record(number: int, writer: str) -> str:
    # long lines, so that two writers' bytes would interleave if appends were not whole
    return json.dumps(dict(version=1, time="", rater=writer, task=str(number), unit=UNIT, latent=number,
                           explainer=writer, explanation="x" * 3000, rating=1, n_windows=0, n_correct=0,
                           answers=[]))  # fmt: skip


def _append_many(path, writer):
    for number in range(200):
        append_line(path, _record(number, writer))


def test_concurrent_appends_from_two_processes_stay_whole(tmp_path):
    path = tmp_path / "ratings/ann.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(path, w)) for w in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 401
    records = read_records(path)
    assert len(records) == 400
    for writer in "ab":  # each writer's lines complete and in its own order
        assert [r["latent"] for r in records if r["explainer"] == writer] == list(range(200))


def test_truncated_trailing_line_is_ignored_and_next_append_stays_whole(results, tmp_path):
    pool, ratings_dir = _pool(results), tmp_path / "ratings"
    task = pool.task_of(UNIT, 7, "qwen")
    record_rating(ratings_dir, "ann", task, _truthful(pool, task), 4, pool)
    with open(ratings_dir / "ann.jsonl", "ab") as f:  # a crash in the middle of a write
        f.write(b'{"version": 1, "time": "2026-01-01T00:00:00", "rater": "an')
    assert len(read_records(ratings_dir / "ann.jsonl")) == 1
    other = pool.task_of(UNIT, 7, "random")
    record_rating(ratings_dir, "ann", other, _truthful(pool, other), 1, pool)
    assert [r["rating"] for r in read_records(ratings_dir / "ann.jsonl")] == [4, 1]
    # latent 7 shows activating windows only: plain accuracy
    assert read_ratings(ratings_dir)["accuracy_metric"].tolist() == ["accuracy", "accuracy"]


def _ratings(rows) -> pd.DataFrame:
    """A read_ratings-like table from (rater, latent, rating, human_accuracy, {window: answer})."""
    return pd.DataFrame([dict(rater=r, unit=UNIT, latent=lat, explainer="qwen", rating=rating,
                              human_accuracy=acc,
                              answers=[dict(window=w, answer=a) for w, a in answers.items()])
                         for r, lat, rating, acc, answers in rows])  # fmt: skip


def _scores(values, scorer="detection", status="ok") -> pd.DataFrame:
    corpus, model, hookpoint, dictionary, sampler = UNIT.split("/")
    return pd.DataFrame([dict(corpus=corpus, model=model, hookpoint=hookpoint, dictionary=dictionary,
                              sampler=sampler, explainer="qwen", explainer_kind="llm", latent=lat,
                              scorer=scorer, kind=scorer, status=status, score=score)
                         for lat, score in values.items()])  # fmt: skip


def test_spearman_between_mean_rating_and_scorer_follows_the_ratings():
    # ratings 1, 2, 3, 4; scores rank 1, 3, 2, 4: d = 0, -1, 1, 0, rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    scores = pd.concat(
        [
            _scores({0: 0.1, 1: 0.3, 2: 0.2, 3: 0.4}),
            _scores({0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8}, "embedding", status="no_test_examples"),
        ]
    )
    ratings = _ratings([("ann", lat, lat + 1, 0.25 * lat, {}) for lat in range(4)])
    table = agreement(ratings, scores)["scorers"].set_index("scorer")
    assert table.loc["detection", "n"] == 4
    assert table.loc["detection", "spearman"] == pytest.approx(0.8)
    assert table.loc["detection", "spearman_accuracy"] == pytest.approx(0.8)
    assert table.loc["detection", "paper_spearman"] == 0.59
    # status not ok: no score, so nothing to correlate
    assert table.loc["embedding", "n"] == 0 and np.isnan(table.loc["embedding", "spearman"])

    reversed_ratings = _ratings([("ann", lat, 4 - lat, 0.25 * lat, {}) for lat in range(4)])
    flipped = agreement(reversed_ratings, scores)["scorers"].set_index("scorer")
    assert flipped.loc["detection", "spearman"] == pytest.approx(-0.8)

    latents = agreement(ratings, scores)["latents"]
    assert latents["score.detection"].tolist() == [0.1, 0.3, 0.2, 0.4]
    assert latents["score.embedding"].isna().all()


def test_mean_rating_over_raters_per_item():
    ratings = _ratings([("ann", 0, 2, 0.5, {}), ("bob", 0, 5, 1.0, {}), ("ann", 1, 3, 0.5, {})])
    latents = agreement(ratings, _scores({0: 0.9, 1: 0.1}))["latents"]
    assert latents[["latent", "n_raters", "mean_rating", "human_accuracy"]].values.tolist() == [
        [0, 2, 3.5, 0.75], [1, 1, 3.0, 0.5]]  # fmt: skip


def _alpha(table, metric):
    return table["alpha"].set_index("metric").loc[metric]


def test_krippendorff_alpha_hand_computed_cases():
    # ratings (ordinal), two raters on units (1, 1), (2, 3), (3, 3): values n_1 = 2, n_2 = 1, n_3 = 3, n = 6;
    # ordinal distance d(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2: d12 = 2.25, d13 = 12.25, d23 = 4;
    # observed: the pair (2, 3) both ways, D_o = 2 * 4 / 6; expected D_e = 2 * (2*1*2.25 + 2*3*12.25 + 1*3*4)
    # / (6 * 5) = 6; alpha = 1 - (8/6) / 6 = 7/9
    ratings = _ratings([("ann", 0, 1, 1.0, {}), ("ann", 1, 2, 1.0, {}), ("ann", 2, 3, 1.0, {}),
                        ("bob", 0, 1, 1.0, {}), ("bob", 1, 3, 1.0, {}), ("bob", 2, 3, 1.0, {})])  # fmt: skip
    row = _alpha(agreement(ratings, _scores({})), "rating")
    assert (row.alpha, row.n_raters, row.n_units) == (pytest.approx(7 / 9), 2, 3)
    # answers (nominal), windows w1..w4: ann yes yes no no, bob yes no no no; coincidences o_11 = 2,
    # o_10 = o_01 = 1, o_00 = 4; n_1 = 3, n_0 = 5, n = 8;
    # alpha = 1 - (n - 1) * (o_10 + o_01) / (2 * n_0 * n_1) = 1 - 14/30 = 8/15
    no = {"w3": False, "w4": False}
    ratings = _ratings([("ann", 0, 4, 1.0, {"w1": True, "w2": True}), ("ann", 1, 4, 1.0, no),
                        ("bob", 0, 4, 1.0, {"w1": True, "w2": False}), ("bob", 1, 4, 1.0, no)])  # fmt: skip
    table = agreement(ratings, _scores({}))
    assert _alpha(table, "answers").alpha == pytest.approx(8 / 15)
    assert _alpha(table, "answers").n_units == 4
    assert np.isnan(_alpha(table, "rating").alpha)  # every rating 4: no variation, alpha undefined
    perfect = _ratings([(r, lat, lat + 1, 1.0, {}) for r in ("ann", "bob") for lat in range(3)])
    assert _alpha(agreement(perfect, _scores({})), "rating").alpha == 1.0


def _naive_alpha(matrix: np.ndarray, ordinal: bool) -> float:
    """Krippendorff's alpha from the coincidence matrix, written out (oracle for the package)."""
    values = np.unique(matrix[~np.isnan(matrix)])
    index = {v: i for i, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for unit in matrix.T:
        unit = unit[~np.isnan(unit)]
        if len(unit) < 2:
            continue
        for i, a in enumerate(unit):
            for j, b in enumerate(unit):
                if i != j:
                    coincidence[index[a], index[b]] += 1 / (len(unit) - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    delta = np.zeros_like(coincidence)
    for c in range(len(values)):
        for k in range(len(values)):
            lo, hi = min(c, k), max(c, k)
            delta[c, k] = (n_c[lo : hi + 1].sum() - (n_c[c] + n_c[k]) / 2) ** 2 if ordinal else float(c != k)
    return 1 - (n - 1) * (coincidence * delta).sum() / (np.outer(n_c, n_c) * delta).sum()


def _long(matrix: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame([dict(rater=r, unit=u, value=matrix[r, u]) for r in range(matrix.shape[0])
                         for u in range(matrix.shape[1]) if not np.isnan(matrix[r, u])])  # fmt: skip


def test_krippendorff_alpha_matches_worked_example_and_oracle():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with 4 observers,
    # 12 units and missing values: nominal alpha 0.743, ordinal 0.815
    nan = np.nan
    example = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]])  # fmt: skip
    nominal, n_raters, n_units, _ = krippendorff_alpha(_long(example), "nominal")
    assert (round(nominal, 3), n_raters, n_units) == (0.743, 4, 11)  # unit 12 has one value only
    assert round(krippendorff_alpha(_long(example), "ordinal")[0], 3) == 0.815
    rng = np.random.default_rng(0)
    for _ in range(5):
        matrix = rng.integers(1, 6, size=(3, 15)).astype(float)
        matrix[rng.random(matrix.shape) < 0.2] = nan
        for level, ordinal in [("nominal", False), ("ordinal", True)]:
            assert krippendorff_alpha(_long(matrix), level)[0] == pytest.approx(_naive_alpha(matrix, ordinal))


def test_alpha_is_nan_with_one_rater_or_one_shared_unit():
    one = agreement(_ratings([("ann", lat, lat + 1, 1.0, {}) for lat in range(3)]), _scores({}))
    assert np.isnan(_alpha(one, "rating").alpha) and _alpha(one, "rating").note == "fewer than two raters"
    shared = _ratings([("ann", 0, 1, 1.0, {}), ("ann", 1, 2, 1.0, {}), ("bob", 0, 1, 1.0, {})])
    row = _alpha(agreement(shared, _scores({})), "rating")
    assert np.isnan(row.alpha) and (row.n_raters, row.n_units) == (2, 1)


def test_agreement_files_and_records_from_recorded_ratings(results, tmp_path):
    pool, ratings_dir = _pool(results), tmp_path / "ratings"
    for rater, rating in [("ann", 4), ("bob", 2)]:
        for item in pool.items:
            record_rating(ratings_dir, rater, item.task, _truthful(pool, item.task), rating, pool)
    summary = tmp_path / "latents.parquet"
    _scores({3: 0.8, 7: 0.2}).to_parquet(summary)
    tables = write_agreement(ratings_dir, summary, tmp_path / "summary")
    for name in ("latents", "scorers", "alpha"):
        assert pd.read_parquet(tmp_path / f"summary/agreement-{name}.parquet").shape == tables[name].shape
    latents = tables["latents"].set_index(["latent", "explainer"])
    columns = ["n_raters", "mean_rating", "human_accuracy", "score.detection"]
    assert latents.loc[(3, "qwen"), columns].tolist() == [2, 3.0, 1.0, 0.8]
    assert np.isnan(latents.loc[(3, "random"), "score.detection"])  # the summary holds no random rows here
    paths = {name: tmp_path / f"rule/{name}.parquet" for name in ("latents", "scorers", "alpha")}
    write_agreement(ratings_dir, summary, paths)  # the Snakemake rule's form: one path per table
    assert pd.read_parquet(paths["alpha"]).equals(
        pd.read_parquet(tmp_path / "summary/agreement-alpha.parquet")
    )
    records = agreement_records(ratings_dir, summary)
    json.dumps(records, allow_nan=False)  # valid JSON for the server: NaN became null
    assert records["alpha"]["answers"]["alpha"] == 1.0  # both raters answered every window truthfully
    # ann always 4, bob always 2 on the 4 items: n_2 = n_4 = 4, n = 8, coincidences o_24 = o_42 = 4;
    # alpha = 1 - (n - 1) * 8 d / (2 * 4 * 4 d) = 1 - 56/32 = -0.75 (systematic disagreement)
    assert records["alpha"]["rating"]["alpha"] == pytest.approx(-0.75)
    assert agreement_records(ratings_dir, tmp_path / "missing.parquet")["scorers"] == []
    empty = agreement_records(tmp_path / "no-ratings", summary)
    assert (empty["latents"], empty["alpha"]["rating"]["note"]) == ([], "fewer than two raters")
    assert empty["scorers"][0]["n"] == 0 and empty["scorers"][0]["spearman"] is None
