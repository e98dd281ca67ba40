from django.urls import path

from accounts import api

urlpatterns = [
    path("auth/register", api.RegisterApi.as_view()),
    path("auth/login", api.LoginApi.as_view()),
    path("auth/refresh", api.RefreshApi.as_view()),
    path("auth/logout", api.LogoutApi.as_view()),
    path("users/me", api.MeApi.as_view()),
]
