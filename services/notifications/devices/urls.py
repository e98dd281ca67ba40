from django.urls import path

from devices import api

urlpatterns = [
    path("devices", api.DeviceCreateApi.as_view()),
    path("devices/<str:token>", api.DeviceDeleteApi.as_view()),
]
