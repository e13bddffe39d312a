"""clip-retrieval's back-end protocol, so its ClipClient and front end work against
diffrep unchanged: POST /knn-service, GET /indices-list, POST /metadata.

Requests are the JSON clip-retrieval's client sends (indice_name = an index folder of
the root); answers have its shape: a list of {id, similarity, url, caption, key}. Image
queries are base64 image bytes, or an embedding; `deduplicate` drops results whose
stored vectors are within 0.94 cosine of a better one (clip-retrieval's rule). Not
served: text queries (diffrep's descriptors have no text tower), image_url (the service
fetches nothing from the network), safety and aesthetic filters (no such models here).
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse

from diffrep.serve.state import ServeState, TooLarge, check_length, read_upload

DEDUP_SIMILARITY = 0.94


async def _json(request: Request, limit: int) -> dict:
    check_length(request, limit)
    body = await request.body()
    if len(body) > limit:
        raise TooLarge(f"the request body is {len(body) / 2**20:.1f} MiB (limit {limit / 2**20:.0f} MiB)")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def indices_list(request: Request) -> JSONResponse:
    return JSONResponse(list(request.app.state.serve.searches))


def _dedup(search, matches: list) -> list:
    if len(matches) < 2:
        return matches
    vecs = search.vectors([m.id for m in matches])
    kept: list[int] = []
    for i in range(len(matches)):
        if all(float(vecs[i] @ vecs[j]) < DEDUP_SIMILARITY for j in kept):
            kept.append(i)
    return [matches[i] for i in kept]


async def knn_service(request: Request) -> JSONResponse:
    st: ServeState = request.app.state.serve
    # base64 grows the image by 4/3
    data = await _json(request, st.config.max_upload_bytes * 4 // 3 + 65536)
    search = st.index(str(data.get("indice_name") or next(iter(st.searches), "")))
    k = data.get("num_images", 40)
    if not isinstance(k, int) or isinstance(k, bool):
        raise ValueError("num_images must be an integer")
    if data.get("text"):
        raise ValueError(f"text queries are not served: the index of {search.model} has no text tower "
                         "in diffrep (send an image or an embedding)")
    if data.get("image_url"):
        raise ValueError("image_url is not served (the service fetches nothing): send the image "
                         "bytes base64-encoded as 'image'")
    if data.get("image"):
        try:
            raw = base64.b64decode(str(data["image"]), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'image' must be base64-encoded image bytes") from None
        image = read_upload(raw, st.config)
        matches = await st.run(search.by_image, image, k, False)
    elif data.get("embedding_input") is not None:
        emb = data["embedding_input"]
        if not isinstance(emb, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in emb):
            raise ValueError("embedding_input must be a list of numbers")
        matches = await st.run(search.by_vector, np.asarray(emb, np.float32), k)
    else:
        raise ValueError("send one of image (base64) or embedding_input")
    if data.get("deduplicate"):
        matches = await st.run(_dedup, search, matches)
    return JSONResponse([{"id": m.id, "similarity": m.similarity, "url": m.url, "caption": m.caption,
                          "key": m.key} for m in matches])


async def metadata(request: Request) -> JSONResponse:
    st: ServeState = request.app.state.serve
    data = await _json(request, 2**20)
    search = st.index(str(data.get("indice_name") or next(iter(st.searches), "")))
    ids = data.get("ids")
    if not isinstance(ids, list) or len(ids) > 10_000 or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError("ids must be a list of at most 10000 integers")
    valid = [i for i in ids if 0 <= i < search.handle.ntotal]
    rows = search.handle.lookup(np.asarray(valid, np.int64), columns=["key", "url", "caption"]).to_pylist()
    by_id = dict(zip(valid, rows, strict=True))
    return JSONResponse([{"id": i, "metadata": by_id[i]} for i in ids if i in by_id])
