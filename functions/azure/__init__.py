"""Azure Functions adapter (Python v2 programming model: `app` in `functions/azure/function_app.py`)."""
