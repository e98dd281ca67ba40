from posts.api import cursor_position
from rest_framework.response import Response
from rest_framework.views import APIView

from shared.pagination import page_request, page_response
from timelines import selectors

SALT = "home-feed"


class HomeFeedApi(APIView):
    """GET /api/v1/feed: newest first, followed users' posts and own. Always 200 when feed itself
    is healthy: if users is down, authors come from cache or as placeholders and `degraded` is true."""

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
