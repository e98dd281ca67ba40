"""Base view and helpers for `/internal/...` endpoints (service-to-service, never routed publicly)."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.views import APIView

from shared.auth import CallerAllowed, IsInternalService, ServiceTokenAuthentication


class InternalApiView(APIView):
    """Base for `/internal/...` endpoints: service credential required, end-user tokens refused,
    and only the services named in `allowed_callers` admitted (403 for any other; none by default)."""

    authentication_classes = [ServiceTokenAuthentication]
    permission_classes = [IsInternalService, CallerAllowed]
    allowed_callers: frozenset[str] = frozenset()


def parse_id_list(raw: str | None, *, name: str = "ids", max_items: int = 100) -> list[int]:
    """`?ids=1,2,3` → [1, 2, 3]; a 400 problem for anything else."""
    items = [part for part in (raw or "").split(",") if part]
    if not items or len(items) > max_items:
        raise ValidationError({name: [f"Give 1 to {max_items} comma-separated ids."]})
    if not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in items):
        raise ValidationError({name: ["Ids are decimal numbers."]})
    return sorted({int(p) for p in items})
