"""The service layer: the tracker's work, between the faces (Celery, web, CLI, API) and the
rules and the SQL: each function asks the rules what to do and the SQL layer to store it."""
