# Loaded by schemathesis in tests/e2e/openapi.rs: tus bodies
# (`application/offset+octet-stream`) are raw bytes, sent as
# `application/octet-stream` bodies are.
import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
