"""URLconf for the platform tests: the real one plus a view that fails."""

from django.urls import path
from rest_framework.views import APIView
from users_service.urls import handler400, handler403, handler404, handler500, urlpatterns  # noqa: F401


class BoomApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        raise RuntimeError("secret internals /etc/passwd")


urlpatterns = [*urlpatterns, path("boom", BoomApi.as_view())]
