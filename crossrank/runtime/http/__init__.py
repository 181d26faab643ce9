"""The HTTP front end: request shapes (api), the OpenAPI document (schema), the server."""
