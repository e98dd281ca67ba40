from accounts.api import JwksApi
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("", include("shared.health")),
    path("", include("shared.observability")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(".well-known/jwks.json", JwksApi.as_view()),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("follows.urls")),
    path("internal/v1/", include("accounts.internal_urls")),
    path("internal/v1/", include("follows.internal_urls")),
]

handler400 = "shared.problems.bad_request"
handler403 = "shared.problems.permission_denied"
handler404 = "shared.problems.not_found"
handler500 = "shared.problems.server_error"
