from drf_spectacular.utils import extend_schema, inline_serializer
from posts.api import PostSerializer, cursor_position
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from shared.openapi import CURSOR_PARAMETERS, problems
from shared.pagination import page_request, page_response
from timelines import selectors

SALT = "home-feed"
HOME_PAGE = inline_serializer(
    "HomeFeedPage",
    fields={
        "results": PostSerializer(many=True),
        "next_cursor": serializers.CharField(allow_null=True, help_text="Cursor of the next page; null on the last."),
        "degraded": serializers.BooleanField(help_text="True when some authors are placeholders (users unavailable)."),
    },
)


class HomeFeedApi(APIView):
    """GET /api/v1/feed: newest first, followed users' posts and own. Always 200 when feed itself
    is healthy: if users is down, authors come from cache or as placeholders and `degraded` is true."""

    @extend_schema(
        operation_id="feed_home",
        tags=["timelines"],
        parameters=CURSOR_PARAMETERS,
        responses={200: HOME_PAGE, **problems(400, 401)},
    )
    def get(self, request):
        page = page_request(request.query_params, salt=SALT)
        before_id = cursor_position(page)
        ids, prefetched = selectors.home_timeline_page(user_id=request.user.id, before_id=before_id, count=page.limit + 1)
        degraded = False

        def serialize(batch):
            nonlocal degraded
            posts, degraded = selectors.home_timeline_render(
                viewer_id=request.user.id, post_ids=list(batch), prefetched=prefetched
            )
            return posts

        body = page_response(ids, page, salt=SALT, key=lambda post_id: post_id, serialize=serialize)
        body["degraded"] = degraded
        return Response(body)


_FLOOR_PAGE = {
    "results": [
        {
            "id": str(7_000_000_000_000_000 + i),
            "author": {
                "id": str(1000 + i),
                "username": f"user{i}",
                "display_name": f"User {i}",
                "avatar_url": "",
                "placeholder": False,
            },
            "body": f"a constant post {i} of the framework floor, about as long as a short post",
            "mentions": [],
            "like_count": i,
            "liked_by_me": False,
            "created_at": "2026-01-01T00:00:00.000000Z",
        }
        for i in range(20)
    ],
    "next_cursor": None,
    "degraded": False,
}


@extend_schema(exclude=True)
class BenchFloorApi(APIView):
    """GET /api/v1/feed/bench-floor, routed only when settings.BENCH_FLOOR (bench/mix_bench.py): the
    least a DRF view on this stack does for a home page (token verified, page rendered, same
    middleware), returning a constant 20-post page. The home timeline's read cost is compared to it."""

    def get(self, request):
        return Response(_FLOOR_PAGE)
