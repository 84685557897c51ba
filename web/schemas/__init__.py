"""msgspec Structs of every request and response body, by resource."""
