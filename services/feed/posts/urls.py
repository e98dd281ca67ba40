from django.urls import path

from posts import api

urlpatterns = [
    path("posts", api.PostListCreateApi.as_view()),
    path("posts/<str:post_id>", api.PostDetailApi.as_view()),
    path("posts/<str:post_id>/like", api.PostLikeApi.as_view()),
]
