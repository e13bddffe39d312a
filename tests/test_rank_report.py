"""The ranking report shows what it counts (issue 26, item 5): every labelled caption of
the top_n is in its table, not only the report_top shown with images, and each label
count links to the rows it counts."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from diffrep.rank.config import RankConfig
from diffrep.rank.layout import RankLayout
from diffrep.rank.report import write_report


def truth_rows(n: int, verbatim_ranks: dict[int, str]) -> pa.Table:
    return pa.Table.from_pylist([{
        "caption_id": f"c{rank}", "caption": f"caption number {rank}", "dcs_rank": rank,
        "dcs": 1.0 / rank, "noise_magnitude": 0.5, "ecs": 10.0,
        "label": verbatim_ranks.get(rank, "none"), "matching_distance": 0.05,
        "retrieval_distance": 0.2, "template_distance": None, "top_neighbour_key": "k",
        "top_neighbour_sim": 0.9, "template_key": None, "template_mask": None,
        "own_keys": ["k"], "images": [], "image_tar": ""} for rank in range(1, n + 1)])


def test_every_labelled_caption_is_listed_and_counts_link_to_their_rows(tmp_path):
    # As the issue found: MV at ranks 15 and 18-20, beyond report_top
    mv = {15: "MV", 18: "MV", 19: "MV", 20: "MV"}
    truth = truth_rows(20, mv)
    cfg = RankConfig(root=str(tmp_path), run="r", checkpoint="ckpt", top_n=20, report_top=0)
    summary = {"scored": 100, "distance": "RMS", "labels": {"MV": 4, "none": 16},
               "curves": {"dcs": {"found": [0, 1], "precision": [0.0, 0.5]}}}
    url = write_report(RankLayout(str(tmp_path), "r"), cfg, summary, truth)
    html = Path(url).read_text()
    for rank in range(1, 21):
        assert f"caption number {rank}<" in html
    ids = set(re.findall(r"id='([^']+)'", html))
    hrefs = re.findall(r"href='#([^']+)'", html)
    assert hrefs and set(hrefs) <= ids  # no dangling link
    # the MV row of the label table links to exactly the four MV captions' rows
    mv_row = re.search(r"<tr><td>MV</td>(.*?)</tr>", html).group(1)
    assert sorted(re.findall(r"href='#rank-(\d+)'", mv_row), key=int) == ["15", "15", "18", "19", "20"]
    assert ">4</a>" in mv_row


def test_untested_captions_have_their_own_row_and_a_note_on_making_them_testable(tmp_path):
    truth = truth_rows(3, {1: "TV", 2: "untested", 3: "untested"})
    cfg = RankConfig(root=str(tmp_path), run="r", checkpoint="ckpt", top_n=3, report_top=0)
    summary = {"scored": 3, "distance": "RMS", "labels": {"TV": 1, "untested": 2}, "untested": 2,
               "curves": {"dcs": {"found": [1], "precision": [1.0]}}}
    html = Path(write_report(RankLayout(str(tmp_path), "r"), cfg, summary, truth)).read_text()
    assert re.search(r"<tr><td>untested</td><td><a href='#rank-2'>2</a>", html)
    assert "2 caption(s) untested" in html and "dcs.dedup_groups" in html
    assert "2 untested left out" in html
