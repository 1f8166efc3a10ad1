"""Google Cloud Functions (gen2) adapter (targets `http` and `on_storage_event` in `functions/gcp/main.py`)."""
