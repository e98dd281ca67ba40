from django.urls import path

from accounts import internal_api

urlpatterns = [
    path("users", internal_api.UsersBatchApi.as_view()),
    path("users/by-username", internal_api.UsersByUsernameApi.as_view()),
]
