from django.urls import include, path

from shared.urls import handler400, handler403, handler404, handler500, platform_urlpatterns  # noqa: F401

urlpatterns = [
    *platform_urlpatterns,
    path("api/v1/", include("posts.urls")),
    path("api/v1/", include("timelines.urls")),
]
