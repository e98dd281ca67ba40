from django.urls import path

from timelines import api

urlpatterns = [path("feed", api.HomeFeedApi.as_view())]
