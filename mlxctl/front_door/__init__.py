"""The front door: the service's one address, owned by the supervisor, proxying to the worker."""
