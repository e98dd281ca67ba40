from django.urls import path

from follows import internal_api

urlpatterns = [path("users/<int:user_id>/follower-ids", internal_api.FollowerIdsApi.as_view())]
