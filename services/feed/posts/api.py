from authors.client import users_client
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from posts import selectors, services
from shared.fields import StrictCharField
from shared.http import DownstreamHTTPError, DownstreamUnavailable
from shared.idempotency import idempotent
from shared.pagination import PageRequest, page_request, page_response
from shared.problems import Problem

MAX_ID = 2**63 - 1


def parse_post_id(raw: str) -> int:
    """A path id: decimal, 64-bit. Anything else names no post: 404."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
        raise Problem(404, "not-found", "No such post.", title="Not found")
    return int(raw)


def cursor_position(page: PageRequest) -> int | None:
    if page.position is not None and (isinstance(page.position, bool) or not isinstance(page.position, int)):
        raise Problem(400, "validation-error", "One or more fields are invalid.", title="Invalid input",
                      errors={"cursor": ["Invalid cursor."]})
    return page.position


def _render_one(row: dict, viewer_id: int) -> dict:
    posts, _ = selectors.posts_render(rows=[row], viewer_id=viewer_id)
    return posts[0]


class PostListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        body = StrictCharField(max_length=None, allow_blank=True, trim_whitespace=False)

    @idempotent(scope="posts.create")
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        post = services.post_create(author_id=request.user.id, body=data.validated_data["body"])
        row = selectors.post_by_id(post_id=post.id)
        return Response(_render_one(row, request.user.id), status=status.HTTP_201_CREATED)

    def get(self, request):
        """User timeline: GET /api/v1/posts?author={username}."""
        username = request.query_params.get("author", "")
        if not username:
            raise Problem(400, "validation-error", "One or more fields are invalid.", title="Invalid input",
                          errors={"author": ["A username is required."]})
        page = page_request(request.query_params, salt="author-posts")
        before_id = cursor_position(page)
        try:
            found = users_client().summaries_by_username([username]) if len(username) <= 30 else {}
        except DownstreamHTTPError:
            found = {}
        except DownstreamUnavailable as exc:
            raise Problem(503, "dependency-unavailable", "Users cannot be looked up right now.",
                          title="Service unavailable") from exc
        author = found.get(username.lower())
        if author is None:
            raise Problem(404, "not-found", f"No user named {username!r}.", title="Not found")
        rows = selectors.author_posts_page(author_id=author.id, before_id=before_id, limit=page.limit)
        return Response(page_response(
            rows, page, salt="author-posts", key=lambda row: row["id"],
            serialize=lambda batch: selectors.posts_render(rows=list(batch), viewer_id=request.user.id)[0]))


class PostDetailApi(APIView):
    def get(self, request, post_id: str):
        row = selectors.post_by_id(post_id=parse_post_id(post_id))
        if row is None:
            raise Problem(404, "not-found", "No such post.", title="Not found")
        return Response(_render_one(row, request.user.id))

    def delete(self, request, post_id: str):
        services.post_delete(post_id=parse_post_id(post_id), user_id=request.user.id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PostLikeApi(APIView):
    def post(self, request, post_id: str):
        created, count = services.like_create(post_id=parse_post_id(post_id), user_id=request.user.id)
        return Response({"liked": True, "like_count": count},
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def delete(self, request, post_id: str):
        services.like_delete(post_id=parse_post_id(post_id), user_id=request.user.id)
        return Response(status=status.HTTP_204_NO_CONTENT)
