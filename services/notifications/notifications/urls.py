from django.urls import path

from notifications import api

urlpatterns = [
    path("notifications", api.NotificationListApi.as_view()),
    path("notifications/unread-count", api.UnreadCountApi.as_view()),
    path("notifications/read", api.MarkReadApi.as_view()),
]
