"""The Celery glue: the app (configuration, queues, beat schedule) and the thin tasks that pass
ids to the service layer. ``celery -A pixverse_tracker.jobs.app worker|beat`` runs them."""
