"""Create the database and the admin user: ``python -m djangoproj.initdb``."""

import os

import django
from django.core.management import call_command

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproj.settings")

ADMIN_USER = "admin"
ADMIN_PASSWORD = "forkserve-admin-pw"

if __name__ == "__main__":
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth import get_user_model
    get_user_model().objects.create_superuser(ADMIN_USER, "admin@example.invalid", ADMIN_PASSWORD)
