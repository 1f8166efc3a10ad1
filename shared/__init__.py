"""slimserve's runtime: what ships inside every function. onnxruntime + numpy + werkzeug, never torch."""
