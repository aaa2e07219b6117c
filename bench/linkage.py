"""Identity linkage benchmark: Archipel's MPI against Splink (DuckDB backend) on the same generated data.

Two sites' files of invented people with a known truth and realistic errors (typos, swapped names, accents and
hyphens, missing fields, transposed dates, moves, married names, twins, homonyms). Site A is registered, then
site B, incrementally, into a fresh SQLite index; Splink links the two files in one batch. Both are scored on
the cross-site pairs: precision, recall and F1 of the automatic links, plus the share sent to review (ours).
A separate set of twins and homonyms measures false merges.

    .venv/bin/python bench/linkage.py --persons 50000
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from archipel.migrations import upgrade
from archipel.platform.db import Database
from archipel.platform.identity import store
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.identity.service import LocalIdentityInput, add_issuer, register, register_many
from archipel.platform.identity.synthetic import Population, Record


@dataclass
class Files:
    """The two sites' records, and the twins/homonyms set."""

    a: list[Record]
    b: list[Record]
    tricky: set[int]


def generate(persons: int, seed: int) -> Files:
    """Site A holds 80 % of the people, site B 60 %; 1 % have a twin and 1 % a homonym at both sites."""
    pop = Population(seed)
    rng = pop.rng
    a: list[Record] = []
    b: list[Record] = []
    tricky: set[int] = set()
    for _ in range(persons):
        p = pop.person()
        group = [p]
        r = rng.random()
        if r < 0.01:
            group.append(pop.twin(p))
        elif r < 0.02:
            group.append(pop.homonym(p))
        if len(group) > 1:
            tricky.update(q.person for q in group)
        for q in group:
            in_a = len(group) > 1 or rng.random() < 0.8
            in_b = len(group) > 1 or rng.random() < 0.6
            if in_a:
                a.append(pop.record(q, f"A{q.person:07d}", noisy=rng.random() < 0.5))
            if in_b:
                later = pop.married(q) if q.sex == "F" and rng.random() < 0.15 else q
                b.append(pop.record(later, f"B{q.person:07d}"))
    rng.shuffle(a)
    rng.shuffle(b)
    return Files(a, b, tricky)


def true_pairs(files: Files) -> set[tuple[str, str]]:
    """Cross-site pairs of records of the same person."""
    by_person = {r.person: r.local_id for r in files.a}
    return {(by_person[r.person], r.local_id) for r in files.b if r.person in by_person}


def score(predicted: set[tuple[str, str]], truth: set[tuple[str, str]]) -> tuple[float, float, float]:
    """Precision, recall and F1 of ``predicted`` pairs."""
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _inputs(issuer: str, records: list[Record]) -> list[LocalIdentityInput]:
    return [LocalIdentityInput(issuer=issuer, **r.row()) for r in records]


#: Identities registered one call (one transaction) at a time after the batch.
SINGLE_CALLS = 300


def run_archipel(files: Files, folder: Path) -> dict[str, float]:
    """Register site A then site B; return figures."""
    url = f"sqlite:///{folder / 'mpi.sqlite'}"
    upgrade(url)
    store.forget_indexes()
    db = Database(url)
    with db.write() as s:
        add_issuer(s, "SITE-A")
        add_issuer(s, "SITE-B")
    inputs_a, inputs_b = _inputs("SITE-A", files.a), _inputs("SITE-B", files.b)
    c0, t0 = time.process_time(), time.perf_counter()
    register_many(db, inputs_a)
    t1 = time.perf_counter()
    register_many(db, inputs_b)
    c2, t2 = time.process_time(), time.perf_counter()
    with db.sessions() as s:
        rows = s.query(
            LocalIdentity.issuer, LocalIdentity.local_id, LocalIdentity.master_id, LocalIdentity.status
        ).all()
    # One call, one committed transaction per identity (what the archive does when a study arrives).
    with db.write() as s:
        add_issuer(s, "SITE-C")
    singles = [LocalIdentityInput(**{**inp.__dict__, "issuer": "SITE-C"}) for inp in inputs_b[:SINGLE_CALLS]]
    t3 = time.perf_counter()
    for inp in singles:
        register(db, inp)
    single_rate = len(singles) / (time.perf_counter() - t3)
    masters: dict[int, list[str]] = defaultdict(list)
    for r in rows:
        masters[r.master_id].append(r.local_id)
    predicted = {(x, y) for ids in masters.values() for x in ids if x[0] == "A" for y in ids if y[0] == "B"}
    person = {r.local_id: r.person for r in files.a + files.b}
    false_merges = sum(1 for ids in masters.values() if len({person[i] for i in ids}) > 1)
    tricky_merges = sum(
        1
        for ids in masters.values()
        if len({person[i] for i in ids}) > 1 and any(person[i] in files.tricky for i in ids)
    )
    p, rc, f1 = score(predicted, true_pairs(files))
    n = len(files.a) + len(files.b)
    review = sum(1 for r in rows if r.status == "review") / n
    db.dispose()
    return {
        "precision": p,
        "recall": rc,
        "f1": f1,
        "review": review,
        "rate": n / (t2 - t0),
        "cpu_rate": n / (c2 - c0),
        "single": single_rate,
        "rate_b": len(files.b) / (t2 - t1),
        "seconds": t2 - t0,
        "false_merges": false_merges,
        "tricky_merges": tricky_merges,
    }


#: Identities Splink links one at a time (predict_between) to measure its incremental rate.
INCREMENTAL_SAMPLE = 50


def run_splink(files: Files, threshold: float) -> dict[str, float]:
    """Link the two files with Splink 5 on DuckDB (u by random sampling, m by EM), auto-link threshold
    ``threshold`` on the match probability."""
    import pyarrow as pa
    import splink.comparison_library as cl
    from splink import Linker, SettingsCreator, block_on
    from splink.backends.duckdb import DuckDBAPI

    def table(records: list[Record]) -> pa.Table:
        rows = []
        for r in records:
            d = r.row()
            d["unique_id"] = d.pop("local_id")
            d["birth_date"] = d["birth_date"].replace("-", "") or None
            d["dob"] = (
                f"{d['birth_date'][:4]}-{d['birth_date'][4:6]}-{d['birth_date'][6:]}"
                if d["birth_date"]
                else None
            )
            d["surname"] = (d["birth_name"] or "").upper() or None
            d["first_name"] = (d["given_names"] or "").upper() or None
            for k in ("sex", "birth_place", "postcode", "phone", "ins"):
                d[k] = d[k] or None
            rows.append(d)
        return pa.Table.from_pylist(rows)

    c0, t0 = time.process_time(), time.perf_counter()
    api = DuckDBAPI()
    sdf_a = api.register(table(files.a), table_name="site_a")
    sdf_b = api.register(table(files.b), table_name="site_b")
    settings = SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.ForenameSurnameComparison("first_name", "surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.ExactMatch("birth_place"),
            cl.PostcodeComparison("postcode"),
            cl.ExactMatch("phone"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("birth_date"),
            block_on("surname", "substr(first_name, 1, 2)"),
            block_on("substr(surname, 1, 2)", "first_name", "substr(birth_date, 1, 4)"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker([sdf_a, sdf_b], settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("birth_date", "surname")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname", "first_name"))
    pred = linker.inference.predict(threshold_match_probability=threshold)
    pairs = pred.as_record_list()
    c1, t1 = time.process_time(), time.perf_counter()
    # Incremental use, as the archive would need it: one arriving identity against the known ones.
    sample = files.b[:INCREMENTAL_SAMPLE]
    t_inc = time.perf_counter()
    for i, r in enumerate(sample):
        one = api.register(table([r]), table_name=f"arriving_{i}")
        linker.inference.predict_between(one, sdf_a, threshold_match_probability=threshold).as_record_list()
    incremental = len(sample) / (time.perf_counter() - t_inc)
    predicted = set()
    for row in pairs:
        left, right = row["unique_id_l"], row["unique_id_r"]
        predicted.add((left, right) if left.startswith("A") else (right, left))
    p, rc, f1 = score(predicted, true_pairs(files))
    person = {r.local_id: r.person for r in files.a + files.b}
    false = {(x, y) for x, y in predicted if person[x] != person[y]}
    tricky = sum(1 for x, y in false if person[x] in files.tricky or person[y] in files.tricky)
    n = len(files.a) + len(files.b)
    return {
        "precision": p,
        "recall": rc,
        "f1": f1,
        "review": 0.0,
        "rate": n / (t1 - t0),
        "cpu_rate": n / (c1 - c0),
        "incremental": incremental,
        "rate_b": 0.0,
        "seconds": t1 - t0,
        "false_merges": len(false),
        "tricky_merges": tricky,
    }


def main() -> None:
    """Generate, link with both, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--splink-threshold", type=float, default=0.999)
    parser.add_argument("--no-splink", action="store_true")
    args = parser.parse_args()
    files = generate(args.persons, args.seed)
    truth = true_pairs(files)
    print(
        f"site A {len(files.a)} records, site B {len(files.b)} records, {len(truth)} true cross-site pairs, "
        f"{len(files.tricky)} people with a twin or homonym"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_archipel(files, Path(tmp))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {"archipel": ours}
    if not args.no_splink:
        results["splink"] = run_splink(files, args.splink_threshold)
    print(
        f"{'':10} {'precision':>9} {'recall':>7} {'F1':>6} {'review':>7} {'ids/s':>8} {'ids/cpu-s':>9} "
        f"{'seconds':>8} {'false':>6} {'twins/homonyms':>15}"
    )
    for name, r in results.items():
        print(
            f"{name:10} {r['precision']:9.4f} {r['recall']:7.4f} {r['f1']:6.4f} {r['review']:7.2%} "
            f"{r['rate']:8.0f} {r['cpu_rate']:9.0f} {r['seconds']:8.2f} {r['false_merges']:6.0f} "
            f"{r['tricky_merges']:15.0f}"
        )
    print("false: archipel = masters holding two people; splink = wrong pairs above the threshold")
    if "splink" in results:
        print(
            f"incremental (one arriving identity at a time): archipel {ours['rate_b']:.0f} ids/s "
            f"(registering site B into an index holding site A, durable writes included), "
            f"splink predict_between {results['splink']['incremental']:.1f} ids/s"
        )
    if "splink" in results:
        s = results["splink"]
        print(
            f"archipel/splink: wall-clock speed x{ours['rate'] / s['rate']:.2f}, "
            f"CPU speed x{ours['cpu_rate'] / s['cpu_rate']:.2f}, "
            f"recall {ours['recall'] - s['recall']:+.4f}, precision {ours['precision'] - s['precision']:+.4f}"
        )
    print(
        f"archipel incremental rate on site B (index already holding site A): {ours['rate_b']:.0f} ids/s; "
        f"peak RSS {rss:.0f} MiB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"register() one identity per transaction: {ours['single']:.0f} ids/s"
    )


if __name__ == "__main__":
    main()
