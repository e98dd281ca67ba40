"""A reader's Redis timeline built from Postgres while timeline writes happen: nothing a writer
commits may be missing from the built set (timelines.store's build protocol). Each test puts the
writer at the one point of the reader's rebuild where it used to be lost, with real Postgres,
Redis and users service; the reader is the real rebuild, the writer the real service function.

The interleaving is forced by running the writer from inside the reader's read of the timelines
table (right after the read returns), or, for a writer whose transaction is still open when the
reader reads, from a second thread with its own database connection."""

import json
import threading

import pytest
from django.db import connection, transaction
from posts.models import Post
from timelines import selectors, services, store

pytestmark = pytest.mark.django_db


def post(person, body="hello") -> int:
    response = person.api.post("/api/v1/posts", data=json.dumps({"body": body}), content_type="application/json")
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def feed_ids(person) -> list[int]:
    response = person.api.get("/api/v1/feed")
    assert response.status_code == 200, response.content
    return [int(p["id"]) for p in response.json()["results"]]


def rebuild_with_writer_after_the_read(monkeypatch, *, user_id: int, writer) -> None:
    """The reader's rebuild, with `writer()` run (and committed) between its read of the timelines
    table and its write of the Redis set."""
    real = selectors.durable_ids

    def read_then_write(**kwargs):
        ids = real(**kwargs)
        writer()
        return ids

    monkeypatch.setattr(selectors, "durable_ids", read_then_write)
    selectors.timeline_rebuild(user_id=user_id)
    monkeypatch.setattr(selectors, "durable_ids", real)


def test_a_delivery_committed_during_a_rebuild_is_in_the_built_timeline(person, monkeypatch):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    first = post(author)
    services.fanout_deliver(post_id=first, user_ids=[fan.id])
    store.drop(user_id=fan.id)  # cold: the next read rebuilds from Postgres
    second = post(author)

    rebuild_with_writer_after_the_read(
        monkeypatch, user_id=fan.id, writer=lambda: services.fanout_deliver(post_id=second, user_ids=[fan.id])
    )

    built, ids, _ = store.page(user_id=fan.id, before_id=None, count=20)
    assert built and ids == [second, first]
    assert feed_ids(fan) == [second, first]


def test_a_follow_backfill_during_a_rebuild_is_in_the_built_timeline(person, monkeypatch):
    author, fan = person("author"), person("fan")
    own = post(fan)
    services.fanout_deliver(post_id=own, user_ids=[fan.id])  # what post.created's handler does
    store.drop(user_id=fan.id)
    written = post(author)
    fan.follow(author)

    rebuild_with_writer_after_the_read(
        monkeypatch, user_id=fan.id, writer=lambda: services.follow_apply(follower_id=fan.id, followee_id=author.id)
    )

    assert feed_ids(fan) == [written, own]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("handler", ["user.followed", "post.created"])
def test_a_write_still_uncommitted_when_the_reader_reads_reaches_the_built_timeline(person, handler):
    """A handler's transaction has written its rows and Redis (no set yet: nothing to write into)
    but not committed when the reader rebuilds: the reader cannot see the rows, so the write after
    the commit is what puts them into the set. user.followed backfills the followee's posts;
    post.created's inline fan-out writes the post to the author and the followers."""
    author, fan = person("author"), person("fan")
    own = post(fan)
    services.fanout_deliver(post_id=own, user_ids=[fan.id])  # what post.created's handler does
    written = post(author)
    fan.follow(author)
    store.drop(user_id=fan.id)
    in_transaction, reader_done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def follower_handler() -> None:
        try:
            with transaction.atomic():
                if handler == "user.followed":
                    services.follow_apply(follower_id=fan.id, followee_id=author.id)
                else:
                    services.fanout_pages(post_id=written, author_id=author.id, deliver=services.fanout_deliver)
                in_transaction.set()
                assert reader_done.wait(30), "the reader did not rebuild"
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            in_transaction.set()
        finally:
            connection.close()

    writer = threading.Thread(target=follower_handler)
    writer.start()
    assert in_transaction.wait(30)
    selectors.timeline_rebuild(user_id=fan.id)  # reads Postgres without the uncommitted rows
    built, ids, _ = store.page(user_id=fan.id, before_id=None, count=20)
    assert built and ids == [own]  # the reader's view before the follow commits
    reader_done.set()
    writer.join(30)
    assert not failures, failures
    assert Post.objects.filter(id=written).exists()
    assert feed_ids(fan) == [written, own]
