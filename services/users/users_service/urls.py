from accounts.api import JwksApi
from django.urls import include, path

from shared.urls import handler400, handler403, handler404, handler500, platform_urlpatterns  # noqa: F401

urlpatterns = [
    *platform_urlpatterns,
    path(".well-known/jwks.json", JwksApi.as_view()),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("follows.urls")),
    path("internal/v1/", include("accounts.internal_urls")),
    path("internal/v1/", include("follows.internal_urls")),
]
