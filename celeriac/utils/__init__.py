"""Small helpers at the import paths Celery users know (``celeriac.utils.log``...)."""
