"""The pure rules: what an answer means, when to look next, how fast to go, which ids and
addresses are acceptable. No SQLAlchemy, Celery, requests or I/O; they import only each other
(tests/test_architecture.py checks it)."""
