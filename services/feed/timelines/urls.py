from django.conf import settings
from django.urls import path

from timelines import api

urlpatterns = [path("feed", api.HomeFeedApi.as_view())]
if settings.BENCH_FLOOR:  # benchmark only (settings.BENCH_FLOOR): the framework floor the home read is compared with
    urlpatterns.append(path("feed/bench-floor", api.BenchFloorApi.as_view()))
