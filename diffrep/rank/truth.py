"""Ground truth for the top of a ranking: which training images each caption's
generations are compared with (own images, retrieved neighbours, templates), fetched once
per chunk, and the verbatim label (diffrep.rank.verbatim)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffrep.dedup.read import DedupGroups
from diffrep.rank import verbatim
from diffrep.search import Searcher


def template_members(searcher: Searcher, neighbour_ids: np.ndarray, groups: DedupGroups | None,
                     k: int) -> dict[int, list[int]]:
    """For each neighbour id, itself first and then the members of its near-duplicate
    group: the dedup job's group when `groups` is given and it has other members, else
    its k nearest neighbours in the index (itself included) (exact similarities; paper 2 derives template
    masks from the retrieved near-duplicates). So a dedup at a threshold too high to group
    a template family (0.95: every variant alone) does not leave its copies without a
    mask. Reads only the dedup parts holding these ids and groups."""
    handle = searcher.handle
    ids = [int(i) for i in neighbour_ids]
    members: dict[int, list[int]] = {}
    if groups is not None and ids:
        group_of = groups.group_ids(np.array(ids, np.int64))
        of_group = groups.members(np.array(sorted(set(group_of.values())), np.int64))
        for nid in ids:
            others = [m for m in of_group.get(group_of.get(nid, -1), []) if m != nid]
            if others:
                members[nid] = [nid] + others
    rest = [nid for nid in ids if nid not in members]
    if rest:
        nn = searcher.search(handle.vectors(np.array(rest, np.int64)), k=min(k, handle.ntotal),
                             rerank="exact", candidates=max(50, k))
        for nid, row in zip(rest, nn.ids, strict=True):
            members[nid] = [nid] + [int(x) for x in row if x >= 0 and x != nid]
    return members


def images_needed(searcher: Searcher, rows: Sequence[dict], member_ids: set[int]
                  ) -> tuple[dict[str, set[str]], dict[int, str]]:
    """({embedding shard: keys} to fetch, {id: key}) for the captions' own images (their
    keys and shards) and every template member."""
    handle = searcher.handle
    wanted: dict[str, set[str]] = {}
    for r in rows:
        for key, shard in zip(r["keys"], r["shards"], strict=True):
            wanted.setdefault(shard, set()).add(key)
    ids = np.array(sorted(member_ids), np.int64)
    id_key = dict(zip(ids.tolist(), handle.lookup(ids, columns=["key"])["key"].to_pylist(), strict=True))
    for shard, keys in handle.keys_by_shard(ids, [id_key[i] for i in ids.tolist()]).items():
        wanted.setdefault(shard, set()).update(keys)
    return wanted, id_key


def label_caption(generations: Sequence[np.ndarray], own_keys: Sequence[str],
                  neighbour_ids: Sequence[int], members: dict[int, list[int]],
                  id_key: dict[int, str], corpus: dict[str, np.ndarray], delta_v: float,
                  delta: float, tolerance: float, min_fixed_share: float = 0.0
                  ) -> tuple[verbatim.Verdict, str | None, np.ndarray | None]:
    """(verdict, key of the nearest template, its stable mask) for one caption from its
    unit-image generations and the fetched `corpus` {key: unit image}.

    A neighbour's group (two or more readable images) is a template when at least
    `min_fixed_share` of its pixels are fixed across it; a group below that was tested
    and is no template. A caption none of whose neighbours has a group could not be
    tested for template verbatim: when it is not MV or RV either, its label is
    "untested" (verbatim.UNTESTED), not "none"."""
    own = [corpus[k] for k in own_keys if k in corpus]
    neighbours = [corpus[id_key[n]] for n in neighbour_ids if id_key.get(n) in corpus]
    templates, template_keys = [], []
    tested = False
    for n in neighbour_ids:
        group = [corpus[id_key[m]] for m in members.get(n, [n]) if id_key.get(m) in corpus]
        if len(group) > 1:
            tested = True
            mask = verbatim.stable_mask(group, tolerance)
            if mask.mean() >= min_fixed_share:
                templates.append((group[0], mask))
                template_keys.append(id_key[n])
    verdict = verbatim.judge(generations, own, neighbours, templates, delta_v, delta)
    if verdict.label == "none" and not tested:
        verdict.label = verbatim.UNTESTED
    best = verbatim.nearest_template(generations, templates)
    if best is None:
        return verdict, None, None
    return verdict, template_keys[best], templates[best][1]
