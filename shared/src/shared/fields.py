"""Serializer fields that refuse coercion: `123` is not a string, `"yes"` is not a boolean."""

from __future__ import annotations

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"not_a_boolean": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("not_a_boolean")
        return data


class IdField(serializers.Field):
    """A 64-bit id: a decimal string in JSON (JavaScript numbers cannot hold it); accepts int too."""

    default_error_messages = {"invalid": "Must be an id (a decimal string)."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("invalid")
        text = str(data)
        # canonical decimal only ("007" is not an id): what the API writes, and what its schema documents
        if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) >= 2**63 or text[0] == "0":
            self.fail("invalid")
        return int(text)

    def to_representation(self, value):
        return str(value)
