"""ONNX export and TensorRT engine build (not built yet)."""
