"""A baseline that cannot separate says so (issue 26, item 4): when most training images
are above the threshold against the rest of the training set, summary.json and the report
lead with a warning naming the share, and each checkpoint's comparison with the baseline is
marked uninformative."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from diffrep.scan.layout import ScanLayout
from diffrep.scan.report import write_report
from diffrep.scan.summary import summarise
from diffrep.scan.worker import GENERATION_SCHEMA
from diffrep.search.region_rule import RegionRule


def generations(sims: list[float]) -> pa.Table:
    rows = [{"gen_id": f"m/{i}/0", "checkpoint": "m", "prompt": f"p{i}", "top1_sim": s,
             "source_sim": s, "top1_id": None} for i, s in enumerate(sims)]
    return pa.Table.from_pylist(rows, schema=GENERATION_SCHEMA)


def baseline(sims: list[float]) -> pa.Table:
    return pa.table({"id": np.arange(len(sims)), "similarity": np.array(sims, np.float32)})


class NoImages:
    """The index handle as the report uses it when no pair has a match."""

    ntotal = 100

    def corpus_images(self, ids, keys) -> dict:
        return {}


def test_a_baseline_mostly_above_the_threshold_leads_with_a_warning(tmp_path):
    # 24 of 25 training images above 0.5 against the rest: 96%, as on the testbed
    summary = summarise({"m": generations([0.9, 0.3])}, baseline([0.8] * 24 + [0.2]), 0.5, "sscd")
    assert len(summary["warnings"]) == 1 and "96.0% of the baseline" in summary["warnings"][0]
    assert list(summary)[0] == "warnings"  # first in summary.json
    assert summary["baseline"]["uninformative"] is True
    assert summary["checkpoints"]["m"]["baseline_comparison"] == "uninformative"
    summary["run"] = "r"
    url = write_report(ScanLayout(str(tmp_path), "r"), NoImages(), summary,
                       {"m": generations([0.9, 0.3])}, 4)
    html = Path(url).read_text()
    body = html[html.index("<body>"):]
    assert body.index("id='warnings'") < body.index("<p>Run")  # leads the page
    assert "96.0% of the baseline" in html and "uninformative (see warning)" in html
    ids = set(re.findall(r"id='([^']+)'", html))
    assert set(re.findall(r"href='#([^']+)'", html)) <= ids  # every figure's link lands
    # the checkpoint's share links to the rows it counts: the one generation above 0.5
    assert "<a href='#above-m'>50.0%</a>" in html
    above = html[html.index("id='above-m'"):]
    assert "m/0/0" in above and "m/1/0" not in above


def test_a_separating_baseline_gives_no_warning():
    summary = summarise({"m": generations([0.9, 0.3])}, baseline([0.2] * 24 + [0.8]), 0.5, "sscd")
    assert summary["warnings"] == [] and summary["baseline"]["uninformative"] is False
    assert summary["checkpoints"]["m"]["baseline_comparison"] == "informative"


def region_generations(rows: list[tuple]) -> pa.Table:
    """Generations of checkpoint "m" from (top-1 sim, region sim, region_verified) rows."""
    return pa.Table.from_pylist(
        [{"gen_id": f"m/{i}/0", "checkpoint": "m", "prompt": f"p{i}", "top1_sim": top1,
          "source_sim": top1, "top1_id": None, "region_sim": region, "region_verified": verified}
         for i, (top1, region, verified) in enumerate(rows)],
        schema=GENERATION_SCHEMA)


def test_a_region_match_rejected_by_geometry_is_not_counted_as_replicated():
    """A generation above the region threshold counts as replicated unless geometric
    verification rejected its match (region_verified False); unverified (None) and verified
    (True) region matches count, and so does a global match whatever its region says."""
    from diffrep.search.calibration import RegionCalibration

    rows = [(0.9, 0.9, False),   # global copy: counted although its region was rejected
            (0.3, 0.8, False),   # region only, rejected: not counted
            (0.3, 0.8, None),    # region only, not verified: counted
            (0.3, 0.8, True),    # region only, verified: counted
            (0.3, 0.4, None)]    # neither
    table = region_generations(rows)
    calibration = RegionCalibration(threshold=0.6, floor=0.5, margin=0.05, nulls={},
                                    decided_by="floor", reason="test")
    region_baseline = pa.table({"id": np.arange(4), "region_similarity": np.float32([0.2] * 4)})
    summary = summarise({"m": table}, baseline([0.2] * 4), 0.5, "sscd", region_baseline, calibration,
                        region_rule=RegionRule(0.6, veto=True))
    checkpoint = summary["checkpoints"]["m"]
    assert checkpoint["region"]["above_threshold"] == 4
    assert checkpoint["region_rejected_by_geometry"] == 2
    assert checkpoint["replicated"] == 3
    assert summary["region_rule"]["veto"] is True
    # without the veto (scan.region_verify false) geometry does not take a match away
    summary = summarise({"m": table}, baseline([0.2] * 4), 0.5, "sscd", region_baseline, calibration)
    assert summary["checkpoints"]["m"]["replicated"] == 4


def test_a_verified_region_match_in_the_rescue_band_counts_and_nothing_else_below_does():
    """The rescue (scan.region_rescue_band): below the threshold only a match in the band
    that geometry verified counts; unverified, rejected, or below the band it does not."""
    from diffrep.search.calibration import RegionCalibration

    rows = [(0.3, 0.55, True),   # in the band, verified: rescued
            (0.3, 0.55, False),  # in the band, rejected
            (0.3, 0.55, None),   # in the band, not verified
            (0.3, 0.35, True),   # verified but below the band
            (0.3, 0.7, None)]    # above the threshold: a copy as before
    table = region_generations(rows)
    calibration = RegionCalibration(threshold=0.6, floor=0.6, margin=0.05, nulls={},
                                    decided_by="floor", reason="test")
    region_baseline = pa.table({"id": np.arange(4), "region_similarity": np.float32([0.2] * 4)})
    rule = RegionRule(0.6, rescue_from=0.4)
    summary = summarise({"m": table}, baseline([0.2] * 4), 0.5, "sscd", region_baseline, calibration,
                        region_rule=rule)
    checkpoint = summary["checkpoints"]["m"]
    assert checkpoint["replicated"] == 2
    assert checkpoint["region_rescued_by_geometry"] == 1
    assert [rule.verdict(r, v) for _, r, v in rows] == [
        "copy: verified below the threshold", "", "", "", "copy"]


def test_the_rescue_is_on_only_when_enough_of_the_index_nulls_in_its_band_fail_verification():
    from diffrep.search.region_rule import MIN_BAND_NULLS, decide_rescue

    lo, record = decide_rescue(0.65, 0.2, {"baseline": [False] * 8, "unrelated": [False] * 4})
    assert lo == 0.45 and record["enabled"] and record["nulls_in_band"] == {"baseline": 8, "unrelated": 4}
    # one verified null: geometry does not separate copies from nulls on this index
    lo, record = decide_rescue(0.65, 0.2, {"baseline": [False] * 30 + [True]})
    assert lo is None and not record["enabled"] and "1 of this index's 31 nulls" in record["reason"]
    # too few nulls in the band to tell
    lo, record = decide_rescue(0.65, 0.2, {"baseline": [False] * (MIN_BAND_NULLS - 1)})
    assert lo is None and "only 9" in record["reason"]
    assert decide_rescue(0.65, 0.0, {"baseline": [False] * 50})[0] is None


def test_a_null_matching_an_identical_region_is_left_out_of_the_rescue_decision():
    """Two training images sharing one pasted part: geometry verifies them, rightly; that
    pair says nothing about geometry on images that share nothing."""
    from diffrep.search.geometry import Verification
    from diffrep.search.region_rule import decide_rescue, null_outcomes

    shared = Verification(True, 6, 8, None, None, 1.0, True, pixel_agreement=0.996)
    chance = Verification(True, 7, 9, None, None, 1.0, False, pixel_agreement=0.2)
    failed = Verification(False, 2, 9, None, None, None)
    verified, sharing = null_outcomes({"baseline": [shared] + [failed] * 12, "unrelated": [failed] * 2})
    assert verified == {"baseline": [False] * 12, "unrelated": [False] * 2}
    assert sharing == {"baseline": 1, "unrelated": 0}
    lo, record = decide_rescue(0.65, 0.3, verified, sharing=sharing)
    assert lo == 0.35 and record["enabled"] and record["nulls_sharing_region"] == {"baseline": 1, "unrelated": 0}
    # a verified null whose pixels do not agree still turns the rescue off
    verified, sharing = null_outcomes({"baseline": [shared, chance] + [failed] * 12})
    assert decide_rescue(0.65, 0.3, verified, sharing=sharing)[0] is None
