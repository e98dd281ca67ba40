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
        ids = selectors.home_timeline_ids(user_id=request.user.id, before_id=before_id, count=page.limit + 1)
        degraded = False

        def serialize(batch):
            nonlocal degraded
            posts, degraded = selectors.home_timeline_render(viewer_id=request.user.id, post_ids=list(batch))
            return posts

        body = page_response(ids, page, salt=SALT, key=lambda post_id: post_id, serialize=serialize)
        body["degraded"] = degraded
        return Response(body)
