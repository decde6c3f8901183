"""The README's FastAPI serving example ("Serving from a Python service"), served by benches/serve_http.py.

The store folder comes from SKEWLESS_STORE; the view is the README's ``user_spend``.
"""

from __future__ import annotations

import os

import skewless as sk
from fastapi import FastAPI, HTTPException

FEATURES = ["user_spend:amount_7d", "user_spend:txn_count_7d"]

store = sk.FeatureStore(os.environ.get("SKEWLESS_STORE", "my_store"))
# Opened once per process, at import: a reader opened before a fork (gunicorn --preload) reopens the store
# in each worker on first use, and threads share it.
reader = store.online_reader(FEATURES)
app = FastAPI()


@app.get("/features/{user_id}")
async def features(user_id: int) -> dict[str, object]:
    # get_numpy: one float64 row per key and an int8 status per view, no Arrow table or dict built per
    # request. A lookup takes microseconds and does not block on I/O, so it runs on the event loop.
    values, status = reader.get_numpy([user_id])
    if status[0, 0] != sk.Status.PRESENT:
        raise HTTPException(404, f"no fresh features for user {user_id}")
    return dict(zip(FEATURES, values[0].tolist(), strict=True))
