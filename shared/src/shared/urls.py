"""What every service's URLconf starts with: health, metrics, OpenAPI schema, problem handlers.

from shared.urls import handler400, handler403, handler404, handler500, platform_urlpatterns
urlpatterns = [*platform_urlpatterns, path("api/v1/", include("posts.urls")), ...]
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

platform_urlpatterns = [
    path("", include("shared.health")),
    path("", include("shared.observability")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]

handler400 = "shared.problems.bad_request"
handler403 = "shared.problems.permission_denied"
handler404 = "shared.problems.not_found"
handler500 = "shared.problems.server_error"
