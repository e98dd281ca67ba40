from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from accounts import selectors
from accounts.api import ProfileSummarySerializer
from shared.internal import InternalApiView, parse_id_list


class UsersBatchApi(InternalApiView):
    """GET /internal/v1/users?ids=1,2,3 → the profiles that exist, in one query."""

    def get(self, request):
        ids = parse_id_list(request.query_params.get("ids"))
        rows = selectors.summaries_by_ids(ids=ids)
        return Response({"results": ProfileSummarySerializer(rows, many=True).data})


class UsersByUsernameApi(InternalApiView):
    """GET /internal/v1/users/by-username?usernames=a,b → profiles of the names that exist (mentions)."""

    def get(self, request):
        names = [n for n in (request.query_params.get("usernames") or "").split(",") if n]
        if not names or len(names) > 100 or any(len(n) > 30 for n in names):
            raise ValidationError({"usernames": ["Give 1 to 100 comma-separated usernames."]})
        rows = selectors.summaries_by_usernames(usernames=names)
        return Response({"results": ProfileSummarySerializer(rows, many=True).data})
