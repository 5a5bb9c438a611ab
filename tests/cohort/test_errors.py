"""BatchReport keeps every problem of every case."""

from cohort.errors import BatchReport, CohortError


def test_a_second_problem_does_not_overwrite_the_first():
    r = BatchReport()
    r.fail("c1", CohortError("gt/c1", "case folder has no ct.nii.gz"))
    r.fail("c1", "pred/c1.nii.gz: prediction has no ground-truth case")
    r.fail("c1", "pred/c1.nii.gz: prediction has no ground-truth case")  # the same problem once
    r.fail("c2", "bad")
    assert not r.ok
    assert r.problems("c1") == ["gt/c1: case folder has no ct.nii.gz", "pred/c1.nii.gz: prediction has no ground-truth case"]
    assert "no ct.nii.gz" in r.failed["c1"] and "no ground-truth case" in r.failed["c1"]
    lines = r.summary().splitlines()
    assert lines[0] == "0 done, 0 skipped (already done), 2 failed"
    assert lines[1:] == ["  FAILED c1: gt/c1: case folder has no ct.nii.gz",
                         "  FAILED c1: pred/c1.nii.gz: prediction has no ground-truth case", "  FAILED c2: bad"]
    assert r.problems("c3") == []


def test_merge_and_entries_set_directly_keep_every_problem():
    a, b = BatchReport(done=["x"]), BatchReport(skipped=["y"])
    a.failed["c1"] = "first"  # written without fail()
    a.fail("c1", "second")
    b.fail("c1", "third")
    b.fail("c2", "other")
    a.merge(b)
    assert a.problems("c1") == ["first", "second", "third"] and a.problems("c2") == ["other"]
    assert (a.done, a.skipped) == (["x"], ["y"])
