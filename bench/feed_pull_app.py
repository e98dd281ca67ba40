"""The monolith's pull model, for comparison: one SQL query joining follows, posts and users,
ordered by time, per home-timeline read (`?user=ID&limit=20`). A plain WSGI app under the same
gunicorn settings as the services; it skips token verification and DRF, which only flatters it.
It reads both schemas through one connection (as the monolith's single database did), so it runs
with the admin DATABASE_URL: the services themselves cannot (schema isolation)."""

import json
import os
import threading
from urllib.parse import parse_qs

import psycopg2
import psycopg2.errors

_local = threading.local()
QUERY = """
SELECT p.id, p.author_id, p.body, p.like_count, p.created_at, u.username, u.display_name, u.avatar_url,
       EXISTS (SELECT 1 FROM feed.posts_like l WHERE l.post_id = p.id AND l.user_id = %(user)s) AS liked
FROM feed.posts_post p JOIN users.accounts_user u ON u.id = p.author_id
WHERE p.author_id IN (SELECT f.followee_id FROM users.follows_follow f WHERE f.follower_id = %(user)s)
   OR p.author_id = %(user)s
ORDER BY p.id DESC LIMIT %(limit)s
"""


# A query must not outlive the request the load generator gave up on (wrk --timeout 5 s): at 10M
# posts some readers' pull query runs for seconds, and abandoned ones kept the database busy into the
# next benchmark round. Cancelled queries answer 503 (wrk counts them as errors).
STATEMENT_TIMEOUT_MS = int(os.environ.get("PULL_STATEMENT_TIMEOUT_MS", "5000"))


def _conn():
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = psycopg2.connect(
            os.environ["PULL_DATABASE_URL"], options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
        )
        conn.autocommit = True
    return conn


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    user, limit = int(query["user"][0]), int(query.get("limit", ["20"])[0])
    try:
        with _conn().cursor() as cur:
            cur.execute(QUERY, {"user": user, "limit": limit})
            rows = cur.fetchall()
    except psycopg2.errors.QueryCanceled:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"timed out"]
    body = json.dumps(
        {
            "results": [
                {
                    "id": str(r[0]),
                    "author": {"id": str(r[1]), "username": r[5], "display_name": r[6], "avatar_url": r[7]},
                    "body": r[2],
                    "like_count": r[3],
                    "liked_by_me": r[8],
                    "created_at": r[4].isoformat(),
                }
                for r in rows
            ]
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
