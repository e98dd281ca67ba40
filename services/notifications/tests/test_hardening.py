"""Hostile input from a security probe (issue 13): it gets a 400 problem and writes nothing."""

import pytest
from devices.models import Device
from notifications.models import Notification

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", ["[" * 1000, '{"all":' * 1000, "[" * 60_000])
@pytest.mark.parametrize("path", ["/api/v1/devices", "/api/v1/notifications/read"])
def test_deeply_nested_json_is_a_400_problem(register, client_for, path, body):
    response = client_for(register("alice")).post(path, data=body, content_type="application/json")
    assert_problem(response, 400, "malformed-request")
    assert Device.objects.count() == 0 and Notification.objects.count() == 0
