"""One storage layer for everything that reads model files: the shape reader and the serving
app's weight loader. Callers name objects by a key relative to the model's root URI."""

from ridgeline.storage.base import ObjectInfo, ObjectStore, StorageError
from ridgeline.storage.uri import ModelURI, open_store, parse_model_uri

__all__ = ["ModelURI", "ObjectInfo", "ObjectStore", "StorageError", "open_store", "parse_model_uri"]
