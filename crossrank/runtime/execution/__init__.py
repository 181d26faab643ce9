"""Execution: the ONNX Runtime session and the engine (queue, batches). Imports only the
core."""
