"""The detector benchmark: score labelled captions with every detector of
diffrep.detect.scores and compare them by ROC AUC and TPR at 1% FPR (label 1 =
memorized), with the UNet passes each spends per caption.

Labels come from a testbed model's truth (testbed/<model>/testbed/truth.json: memorized)
or from a user's file (CSV or parquet with columns caption, label; label 1/0 or
true/false). Writes results.json, table.md and report.html (ROC curves) to out_dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffrep import storage
from diffrep.detect import metrics
from diffrep.detect.scores import DETECTORS, score_captions
from diffrep.report import html


def subsample(captions: list[str], labels: np.ndarray, max_captions: int | None, seed: int
              ) -> tuple[list[str], np.ndarray]:
    """Every positive and, seeded, negatives up to `max_captions` in all (None: all)."""
    if max_captions is None or len(captions) <= max_captions:
        return captions, labels
    neg = np.random.default_rng(seed).permutation(np.flatnonzero(~labels))
    keep = np.sort(np.r_[np.flatnonzero(labels), neg[:max(max_captions - int(labels.sum()), 0)]])
    return [captions[i] for i in keep], labels[keep]


def read_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(captions, labels bool) from a truth.json, a CSV or a parquet file."""
    p = Path(path)
    if p.suffix == ".json":
        rows = json.loads(p.read_text())["captions"]
        return [r["caption"] for r in rows], np.array([bool(r["memorized"]) for r in rows])
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p).to_pydict()
    elif p.suffix == ".csv":
        import csv

        with p.open(newline="") as f:
            recs = list(csv.DictReader(f))
        t = {k: [r[k] for r in recs] for k in (recs[0].keys() if recs else [])}
    else:
        raise ValueError(f"{p}: labels must be .json (testbed truth), .csv or .parquet")
    for col in ("caption", "label"):
        if col not in t:
            raise ValueError(f"{p}: column {col!r} missing (need caption, label)")
    labels = [str(v).strip().lower() in ("1", "true", "yes", "memorized") for v in t["label"]]
    return [str(c) for c in t["caption"]], np.array(labels)


def read_kinds(path: str | Path) -> list[str] | None:
    """The kind of each caption of a testbed truth.json (memorized, template, object,
    paraphrase, once, ...), in read_labels' order; None for a user's CSV / parquet."""
    p = Path(path)
    if p.suffix != ".json":
        return None
    return [str(r.get("kind", "")) for r in json.loads(p.read_text())["captions"]]


def by_kind(scores: dict[str, np.ndarray], labels: np.ndarray, kinds: list[str],
            passes: dict[str, int], fpr: float = 0.01) -> dict[str, dict]:
    """{kind: evaluate(...)} with each kind's positives against every negative caption."""
    kinds_arr = np.asarray(kinds)
    out = {}
    for kind in sorted(set(kinds_arr[labels].tolist())):
        sel = (kinds_arr == kind) & labels | ~labels
        out[kind] = evaluate({d: v[sel] for d, v in scores.items()}, labels[sel], passes, fpr)
        out[kind]["positives"] = int(((kinds_arr == kind) & labels).sum())
    return out


def evaluate(scores: dict[str, np.ndarray], labels: np.ndarray, passes: dict[str, int],
             fpr: float = 0.01) -> dict[str, dict]:
    """{detector: {auc, tpr_at_fpr, passes_per_caption}} for each detector in DETECTORS."""
    return {d: {"auc": metrics.roc_auc(scores[d], labels),
                "tpr_at_fpr": metrics.tpr_at_fpr(scores[d], labels, fpr),
                "passes_per_caption": passes[d]} for d in DETECTORS if d in scores}


def markdown_table(results: dict[str, dict], fpr: float = 0.01,
                   kinds: dict[str, dict] | None = None) -> str:
    lines = [f"| detector | ROC AUC | TPR@{fpr:.0%}FPR | UNet passes / caption |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {d} | {r['auc']:.3f} | {r['tpr_at_fpr']:.3f} | {r['passes_per_caption']} |"
              for d, r in results.items()]
    if kinds:
        lines += ["", f"Per kind (its positives against every negative): ROC AUC / TPR@{fpr:.0%}FPR", "",
                  "| kind | positives | " + " | ".join(results) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in results) + " |"]
        lines += [f"| {k} | {r['positives']} | " + " | ".join(
            f"{r[d]['auc']:.3f} / {r[d]['tpr_at_fpr']:.3f}" for d in results) + " |"
            for k, r in kinds.items()]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, title: str, results: dict[str, dict],
                 scores: dict[str, np.ndarray], labels: np.ndarray, note: str,
                 per_kind: dict[str, dict] | None = None) -> None:
    curves = {}
    for d in results:
        f, t = metrics.roc_curve(scores[d], labels)
        curves[f"{d} (AUC {results[d]['auc']:.3f})"] = (f.tolist(), t.tolist())
    rows = [(d, html.fmt(r["auc"]), html.fmt(r["tpr_at_fpr"]), r["passes_per_caption"])
            for d, r in results.items()]
    body = (f"<p class='note'>{html.esc(note)}</p>"
            + html.table(["detector", "ROC AUC", "TPR@1%FPR", "UNet passes / caption"], rows)
            + (html.table(["kind (against every negative)", "positives",
                           *[f"{d}: AUC / TPR" for d in results]],
                          [(k, r["positives"], *[f"{html.fmt(r[d]['auc'])} / {html.fmt(r[d]['tpr_at_fpr'])}"
                                                 for d in results]) for k, r in per_kind.items()])
               if per_kind else "")
            + html.svg_lines(curves, "ROC curves", "false-positive rate", "true-positive rate",
                             y_max=1.0, legend="bottom"))
    storage.write_bytes(str(out_dir / "report.html"), html.page(title, body).encode())


def run_bench(pipe, captions: list[str], labels: np.ndarray, out_dir: str | Path,
              resolution: int, title: str, guidance_scale: float = 7.5, seed: int = 0,
              ecs_seeds: int = 4, fpr: float = 0.01, batch_size: int = 64,
              kinds: list[str] | None = None) -> dict:
    """Score, evaluate, write results.json / table.md / report.html; returns the results.
    kinds: each caption's kind (a testbed's truth), to evaluate each kind apart too."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores, passes = score_captions(pipe, captions, resolution, guidance_scale, seed,
                                    ecs_seeds, batch_size=batch_size)
    results = evaluate(scores, labels, passes, fpr)
    per_kind = by_kind(scores, labels, kinds, passes, fpr) if kinds is not None else None
    note = (f"{len(captions)} captions, {int(labels.sum())} labelled memorized; guidance "
            f"{guidance_scale}, seed {seed}, ECS J={ecs_seeds}; passes exclude the shared "
            f"unconditional rows")
    storage.write_bytes(str(out / "results.json"), json.dumps({
        "title": title, "note": note, "results": results, "fpr": fpr, "by_kind": per_kind,
        "captions": [{"caption": c, "label": bool(y), **({"kind": kinds[i]} if kinds is not None else {}),
                      **{k: float(v[i]) for k, v in scores.items()}}
                     for i, (c, y) in enumerate(zip(captions, labels, strict=True))]}, indent=1).encode())
    storage.write_bytes(str(out / "table.md"), markdown_table(results, fpr, per_kind).encode())
    write_report(out, title, results, scores, labels, note, per_kind)
    return results
