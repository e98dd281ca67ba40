from django.urls import path

from posts import api, user_timeline

urlpatterns = [
    # a plain Django view that serves the user timeline's GET as api.PostListCreateApi does, and hands
    # it everything else (posts.user_timeline)
    path("posts", user_timeline.posts_list_create),
    path("posts/<str:post_id>", api.PostDetailApi.as_view()),
    path("posts/<str:post_id>/like", api.PostLikeApi.as_view()),
]
