"""Labels distinguish "not a copy" from "not testable" (issue 26, item 1): a caption whose
neighbours give no near-duplicate group, so no template mask, is "untested" for TV, not
"none"; a group that fixes too few pixels is tested and no template; untested captions
are counted apart and left out of the precision curves."""

from __future__ import annotations

import pyarrow as pa

from diffrep.rank.config import RankConfig
from diffrep.rank.run import summarise
from diffrep.rank.truth import label_caption
from diffrep.rank.verbatim import to_unit
from tests.helpers import photo


def template_family(base, n: int = 4, side: int = 128):
    """`n` copies of `base` whose top-left `side` x `side` square varies: 3/4 of the
    pixels fixed, as the testbed's poster family."""
    out = []
    for s in range(n):
        img = base.copy()
        img[:side, :side] = to_unit(photo(10 + s, (96, 96)))[:side, :side]
        out.append(img)
    return out


def test_untested_template_copy_none_and_tv():
    base = to_unit(photo(1, (96, 96)))
    family = template_family(base)
    generation = base.copy()
    generation[:128, :128] = to_unit(photo(99, (96, 96)))[:128, :128]  # a new variant
    corpus = {f"k{i}": img for i, img in enumerate(family)}
    id_key = {i: f"k{i}" for i in range(len(family))}
    args = dict(own_keys=["missing"], neighbour_ids=[0], id_key=id_key, corpus=corpus,
                delta_v=0.12, delta=0.12, tolerance=0.1, min_fixed_share=0.6)
    # no group: the template test cannot run -> untested, not none
    verdict, key, mask = label_caption([generation], members={0: [0]}, **args)
    assert verdict.label == "untested" and key is None and mask is None
    # the family as the neighbour's group (from dedup or from its index neighbours): TV
    verdict, key, mask = label_caption([generation], members={0: [0, 1, 2, 3]}, **args)
    assert verdict.label == "TV" and key == "k0" and 0.7 < mask.mean() < 0.8
    # a group of unrelated images fixes few pixels: tested, no template -> none
    corpus.update({f"u{i}": to_unit(photo(40 + i, (96, 96))) for i in range(3)})
    id_key.update({10 + i: f"u{i}" for i in range(3)})
    verdict, key, _ = label_caption([generation], members={0: [0, 10, 11, 12]}, **args)
    assert verdict.label == "none" and key is None


def test_untested_captions_are_counted_apart_and_left_out_of_the_curves():
    truth = pa.Table.from_pylist([
        {"label": lab, "dcs": 1.0 - i / 10, "ecs": 1.0, "noise_magnitude": 1.0}
        for i, lab in enumerate(["TV", "untested", "MV", "none", "untested"])])
    out = summarise(RankConfig(checkpoint="c"), {}, 5, {}, truth)
    assert out["labels"] == {"TV": 1, "untested": 2, "MV": 1, "none": 1}
    assert out["untested"] == 2
    assert out["curves"]["dcs"]["found"] == [1, 2, 2]  # over TV, MV, none only
    assert out["curves"]["dcs"]["precision"][-1] == round(2 / 3, 5)
