import os

from django.core.wsgi import get_wsgi_application

from shared import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feed_service.settings")
tracing.setup("feed", django=True)  # in the gunicorn worker, after the fork; before the middleware loads
application = get_wsgi_application()
