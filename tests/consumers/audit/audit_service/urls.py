from shared.urls import platform_urlpatterns

urlpatterns = [*platform_urlpatterns]
