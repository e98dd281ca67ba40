from django.urls import path

from follows import api

urlpatterns = [
    path("users/<str:username>", api.UserDetailApi.as_view()),
    path("users/<str:username>/follow", api.FollowApi.as_view()),
    path("users/<str:username>/followers", api.FollowersApi.as_view()),
    path("users/<str:username>/following", api.FollowingApi.as_view()),
]
