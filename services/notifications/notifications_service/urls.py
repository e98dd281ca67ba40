from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("", include("shared.health")),
    path("", include("shared.observability")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/", include("notifications.urls")),
    path("api/v1/", include("devices.urls")),
]

handler400 = "shared.problems.bad_request"
handler403 = "shared.problems.permission_denied"
handler404 = "shared.problems.not_found"
handler500 = "shared.problems.server_error"
