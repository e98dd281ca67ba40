from pathlib import Path

from shared.django_settings import service_settings

BASE_DIR = Path(__file__).resolve().parent.parent
globals().update(service_settings("audit", base_dir=BASE_DIR, apps=["shared.events", "audit"]))
