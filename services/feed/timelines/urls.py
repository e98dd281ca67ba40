from django.conf import settings
from django.urls import path

from timelines import api, home

# a plain Django view that answers as api.HomeFeedApi does, and hands it what it does not serve (timelines.home)
urlpatterns = [path("feed", home.home_feed)]
if settings.BENCH_FLOOR:  # benchmark only (settings.BENCH_FLOOR): the framework floor the home read is compared with
    urlpatterns.append(path("feed/bench-floor", api.BenchFloorApi.as_view()))
