"""A tomosynthesis-only screening exam, in process: four Breast Tomosynthesis stacks (R/L CC/MLO, multi-frame, the
laterality in the functional groups) make a complete exam that goes to the readers; the view is read from the
View Code Sequence at the top level or in the shared functional groups; a finding marked on a stack keeps its
frame (slice), and a frame the image does not have is refused with its reason, nothing recorded."""

from __future__ import annotations

import copy

import pytest

from archipel.mammo.views import image_view
from archipel.radiology.samples import mammo_study
from tests.mammo_images import tomosynthesis, tomosynthesis_exam
from tests.test_mammo_api import Programme, prog, woman  # noqa: F401
from tests.test_mammo_intake import blinded, episode, listed, register, store

sqlite = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

LEVELS = {view: [200 + 50 * n for n in range(8)] for view in ("R-CC", "L-CC", "R-MLO", "L-MLO")}


def test_the_view_of_a_stack_comes_from_its_view_code_at_the_top_or_in_the_functional_groups() -> None:
    (like, *_) = mammo_study(woman(9300), key="tomo-views")
    top = image_view(tomosynthesis(like, "R", "MLO", frames=4, size=16))
    grouped = image_view(tomosynthesis(like, "L", "CC", frames=5, size=16, view_in_groups=True))
    assert (top.laterality, top.view, top.frames, top.tomo, top.problem) == ("R", "MLO", 4, True, "")
    assert (grouped.laterality, grouped.view, grouped.frames, grouped.tomo) == ("L", "CC", 5, True)
    assert grouped.screening and not grouped.modifier
    bare = tomosynthesis(like, "L", "CC", frames=2, size=16, view_in_groups=True)
    del bare.SharedFunctionalGroupsSequence[0].ViewCodeSequence
    assert image_view(bare).problem.endswith("has no view")


@sqlite
def test_a_tomosynthesis_only_exam_is_complete_and_a_finding_keeps_its_frame(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p)
    eid, images = register(p, 9301)
    stacks = tomosynthesis_exam(images[0], LEVELS, size=32)
    store(p, *stacks[:3])
    ep = episode(p, eid)
    assert (ep["status"], ep["flag"], ep["tasks"]) == ("incomplete", "", [])  # L-MLO on its way
    store(p, stacks[3])
    ep = episode(p, eid)
    assert (ep["status"], ep["flag"]) == ("reading", ""), ep
    assert sorted(t["role"] for t in ep["tasks"]) == ["first", "second"]
    assert listed(p) == [eid, eid]
    views = {v["sop"]: v for v in ep["studies"][0]["views"]}
    assert {(v["laterality"], v["view"], v["frames"], v["tomo"]) for v in views.values()} == {
        ("R", "CC", 8, True), ("L", "CC", 8, True), ("R", "MLO", 8, True), ("L", "MLO", 8, True),
    }  # fmt: skip

    task = p.task(eid, "first")
    assert p.post("r1", f"/api/mammo/tasks/{task}/claim").status_code == 200
    l_cc = str(stacks[1].SOPInstanceUID)
    read = {
        "right": {"assessment": 1, "result": "normal"},
        "left": {"assessment": 4, "result": "positive"},
        "density": "c",
        "findings": [
            {
                "type": "distortion", "laterality": "L", "quadrant": "UOQ", "suspicion": 4,
                "views": [{"view": "L-CC", "x": 12, "y": 20, "sop_uid": l_cc, "frame": 6}],
            }
        ],
    }  # fmt: skip

    def with_mark(**mark: object) -> dict[str, object]:
        body = copy.deepcopy(read)
        body["findings"][0]["views"][0].update(mark)  # type: ignore[index]
        return body

    before = p.counts()
    refused = [
        (with_mark(frame=9), "frame 9 of image"),
        (with_mark(frame=0), "greater than or equal to 1"),
        (with_mark(sop_uid=""), "not its image's sop_uid"),
        (with_mark(sop_uid="1.2.826.0.1.4242"), "not one of episode"),
    ]
    for body, reason in refused:
        r = p.post("r1", f"/api/mammo/tasks/{task}/reading", body)
        assert r.status_code == 422 and reason in r.text, (body, r.text)
    assert p.counts() == before

    r = p.post("r1", f"/api/mammo/tasks/{task}/reading", read)
    assert r.status_code == 201, r.text
    ep = episode(p, eid)
    (mine,) = [x for x in ep["readings"] if x["role"] == "first"]
    stored = p.get("r1", f"/api/mammo/episodes/{eid}/readings/{mine['id']}").json()
    (finding,) = stored["findings"]
    assert finding["views"] == [{"view": "L-CC", "x": 12.0, "y": 20.0, "sop_uid": l_cc, "frame": 6}]


@sqlite
def test_a_mark_on_a_2d_image_is_stored_as_before_without_a_frame(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p, code="eu2")
    eid, images = register(p, 9302, code="eu2")
    store(p, *images)
    task = p.task(eid, "first")
    assert p.post("r1", f"/api/mammo/tasks/{task}/claim").status_code == 200
    mark = {"view": "L-CC", "x": 10, "y": 11, "sop_uid": str(images[1].SOPInstanceUID)}
    body = {
        "right": {"assessment": 1}, "left": {"assessment": 4, "result": "positive"}, "density": "b",
        "findings": [{"type": "mass", "laterality": "L", "clock": 2, "suspicion": 4, "views": [mark]}],
    }  # fmt: skip
    assert p.post("r1", f"/api/mammo/tasks/{task}/reading", body).status_code == 201
    (mine,) = [x for x in episode(p, eid)["readings"] if x["role"] == "first"]
    stored = p.get("r1", f"/api/mammo/episodes/{eid}/readings/{mine['id']}").json()
    assert stored["findings"][0]["views"] == [{**mark, "x": 10.0, "y": 11.0}]
