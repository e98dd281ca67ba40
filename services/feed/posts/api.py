from authors import usernames
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from posts import selectors, services
from shared.fields import IdField, StrictCharField
from shared.http import DownstreamHTTPError, DownstreamUnavailable
from shared.idempotency import idempotent
from shared.openapi import (
    BODY,
    CURSOR_PARAMETERS,
    IDEMPOTENCY_KEY,
    USERNAME_PATTERN,
    id_path,
    page_of,
    problems,
    trimmed_text,
)
from shared.pagination import PageRequest, page_request, page_response
from shared.problems import Problem

MAX_ID = 2**63 - 1
AUTHOR_SALT = "author-posts"  # the user timeline's cursors (posts.user_timeline too)
POST_ID = id_path("post_id", "post")


# Schema only: the author embedded in a post (authors.selectors)
class AuthorSerializer(serializers.Serializer):
    id = IdField()
    username = serializers.CharField(help_text="Empty for a placeholder.")
    display_name = serializers.CharField()
    avatar_url = serializers.CharField()
    placeholder = serializers.BooleanField(help_text="True when the users service could not be reached.")


# Schema only: a post as posts.selectors.posts_render writes it
class PostSerializer(serializers.Serializer):
    id = IdField()
    author = AuthorSerializer()
    body = serializers.CharField()
    mentions = serializers.ListField(child=serializers.CharField(), help_text="Usernames mentioned with @.")
    like_count = serializers.IntegerField(min_value=0)
    liked_by_me = serializers.BooleanField()
    created_at = serializers.DateTimeField()


@extend_schema_field(trimmed_text(1, services.MAX_BODY))
class PostBodyField(StrictCharField):
    pass  # schema only: what post_create accepts, 1 to MAX_BODY characters once trimmed


# Schema only: the body of POST /api/v1/posts (InputSerializer checks its type, post_create its length)
class PostCreateSerializer(serializers.Serializer):
    body = PostBodyField(help_text="1–500 characters once trimmed; `@username` mentions notify those users.")

    class Meta:
        ref_name = "PostCreate"


LIKE_RESULT = inline_serializer(
    "LikeResult", fields={"liked": serializers.BooleanField(), "like_count": serializers.IntegerField(min_value=0)}
)


def parse_post_id(raw: str) -> int:
    """A path id: decimal, 64-bit. Anything else names no post: 404."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
        raise Problem(404, "not-found", "No such post.", title="Not found")
    return int(raw)


def cursor_position(page: PageRequest) -> int | None:
    if page.position is not None and (isinstance(page.position, bool) or not isinstance(page.position, int)):
        raise Problem(
            400,
            "validation-error",
            "One or more fields are invalid.",
            title="Invalid input",
            errors={"cursor": ["Invalid cursor."]},
        )
    return page.position


def _render_one(row: dict, viewer_id: int) -> dict:
    posts, _ = selectors.posts_render(rows=[row], viewer_id=viewer_id)
    return posts[0]


class PostListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        body = StrictCharField(max_length=None, allow_blank=True, trim_whitespace=False)

    @extend_schema(
        operation_id="posts_create",
        tags=["posts"],
        request=PostCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: PostSerializer, **problems(*BODY, 401, 409, 422, 429, 503)},
    )
    @idempotent(scope="posts.create")
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        post = services.post_create(author_id=request.user.id, body=data.validated_data["body"])
        row = {field: getattr(post, field) for field in selectors.POST_FIELDS}  # as written: no read back
        posts, _ = selectors.posts_render(rows=[row], viewer_id=request.user.id, liked=set())  # nobody has liked it yet
        return Response(posts[0], status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="posts_by_author",
        tags=["timelines"],
        parameters=[
            OpenApiParameter(
                "author",
                {"type": "string", "pattern": USERNAME_PATTERN},
                OpenApiParameter.QUERY,
                required=True,
                description="Username whose posts to list, newest first.",
            ),
            *CURSOR_PARAMETERS,
        ],
        responses={200: page_of(PostSerializer), **problems(400, 401, 404, 503)},
    )
    def get(self, request):
        """User timeline: GET /api/v1/posts?author={username}."""
        username = request.query_params.get("author", "")
        if not username:
            raise Problem(
                400,
                "validation-error",
                "One or more fields are invalid.",
                title="Invalid input",
                errors={"author": ["A username is required."]},
            )
        page = page_request(request.query_params, salt=AUTHOR_SALT)
        before_id = cursor_position(page)
        try:
            found = usernames.summaries_by_username([username])
        except DownstreamHTTPError:
            found = {}
        except DownstreamUnavailable as exc:
            raise Problem(
                503, "dependency-unavailable", "Users cannot be looked up right now.", title="Service unavailable"
            ) from exc
        author = found.get(username.lower())
        if author is None:
            raise Problem(404, "not-found", f"No user named {username!r}.", title="Not found")
        rows, liked = selectors.author_posts_page(
            author_id=author.id, before_id=before_id, limit=page.limit, viewer_id=request.user.id
        )
        authors = {author.id: {**author.public(), "placeholder": False}}  # from the lookup: no profile read
        return Response(
            page_response(
                rows,
                page,
                salt=AUTHOR_SALT,
                key=lambda row: row["id"],
                serialize=lambda batch: selectors.posts_render(
                    rows=list(batch), viewer_id=request.user.id, authors=authors, liked=liked
                )[0],
            )
        )


class PostDetailApi(APIView):
    @extend_schema(
        operation_id="posts_get", tags=["posts"], parameters=[POST_ID], responses={200: PostSerializer, **problems(401, 404)}
    )
    def get(self, request, post_id: str):
        row = selectors.post_by_id(post_id=parse_post_id(post_id))
        if row is None:
            raise Problem(404, "not-found", "No such post.", title="Not found")
        return Response(_render_one(row, request.user.id))

    @extend_schema(
        operation_id="posts_delete",
        tags=["posts"],
        parameters=[POST_ID, IDEMPOTENCY_KEY],
        responses={204: None, **problems(400, 401, 403, 404, 409, 422)},
    )
    @idempotent(scope="posts.delete")
    def delete(self, request, post_id: str):
        services.post_delete(post_id=parse_post_id(post_id), user_id=request.user.id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PostLikeApi(APIView):
    @extend_schema(
        operation_id="posts_like",
        tags=["likes"],
        request=None,
        parameters=[POST_ID, IDEMPOTENCY_KEY],
        responses={201: LIKE_RESULT, 200: LIKE_RESULT, **problems(400, 401, 404, 409, 422)},
        description="Idempotent: 201 when the like is new, 200 when it already existed.",
    )
    @idempotent(scope="posts.like")
    def post(self, request, post_id: str):
        created, count = services.like_create(post_id=parse_post_id(post_id), user_id=request.user.id)
        return Response({"liked": True, "like_count": count}, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        operation_id="posts_unlike",
        tags=["likes"],
        parameters=[POST_ID, IDEMPOTENCY_KEY],
        responses={204: None, **problems(400, 401, 404, 409, 422)},
    )
    @idempotent(scope="posts.unlike")
    def delete(self, request, post_id: str):
        services.like_delete(post_id=parse_post_id(post_id), user_id=request.user.id)
        return Response(status=status.HTTP_204_NO_CONTENT)
