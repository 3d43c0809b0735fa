"""A small real Django project (admin, CSRF, uploads, streaming, whitenoise)
served by forkserve and by the reference servers in the differential tests."""
